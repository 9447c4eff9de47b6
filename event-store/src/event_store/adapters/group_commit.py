"""Group commit: appends that arrive while others are being written go out together.

PostgreSQL flushes the WAL of transactions that commit at the same moment together;
this does the same one level up, as EventStoreDB's writer queue does. Every append
joins a queue. A writer that is free takes everything waiting and writes it as one
group (one statement, one transaction, one commit); while every writer is busy the
queue fills, so the busier the store, the larger the groups and the fewer the commits.
A lone append is never held back: with a writer free it goes out at once, alone.

How many groups are written at once. Small ones gain most from sharing a commit, so
only ``writers`` of them (two: one gathers while the other writes); large ones gain
little from it and much from running side by side (PostgreSQL works on each in its
own process), so ``large_writers`` more take groups of ``large`` items or more.

    submit(item)   queue ``item``, wait for its own answer (a result or an error)
    write(group)   given by the owner: writes one group, answers each member

Two groups in flight never share a key (a stream): a member whose stream is being
written by another group waits for the next, so groups of one process never race
each other for a stream's next version. Members of one group are in queue order.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(slots=True, eq=False)
class Member(Generic[Item, Result]):
    """One queued item and the future its submitter waits on."""

    item: Item
    answer: "asyncio.Future[Result]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def succeed(self, result: Result) -> None:
        if not self.answer.done():  # a submitter that gave up is told nothing
            self.answer.set_result(result)

    def fail(self, error: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        *,
        write: Callable[[list[Member[Item, Result]]], Awaitable[None]],
        key: Callable[[Item], Hashable],
        size: Callable[[Item], int],
        max_size: int,
        writers: int,
        large_writers: int,
        large: int,
    ) -> None:
        self._write = write
        self._key = key
        self._size = size
        self._max_size = max_size
        self._writers = writers
        self._large_writers = large_writers
        self._large = large
        self._queue: list[Member[Item, Result]] = []
        self._busy_keys: set[Hashable] = set()
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Items queued for a later group (not yet being written)."""
        return len(self._queue)

    async def submit(self, item: Item) -> Result:
        """``item``'s own answer, once the group it went out in is written. A submitter
        cancelled before its group was taken is left out of it; once taken, the item
        may be written all the same (as a request already sent may be)."""
        member: Member[Item, Result] = Member(item)
        self._queue.append(member)
        self._start_writers()
        return await member.answer

    def _start_writers(self) -> None:
        while len(self._in_flight) < self._writers + self._large_writers:
            group, size = self._next_group()
            if not group or (len(self._in_flight) >= self._writers and size < self._large):
                return
            taken = set(group)
            self._queue = [member for member in self._queue if member not in taken and not member.answer.done()]
            self._busy_keys |= {self._key(member.item) for member in group}
            task = asyncio.create_task(self._run(group))
            self._in_flight.add(task)

    def _next_group(self) -> tuple[list[Member[Item, Result]], int]:
        """What waits, in queue order, up to ``max_size`` (at least one member, however
        large), less the members whose key another group holds (they keep their place);
        and its size."""
        group: list[Member[Item, Result]] = []
        size = 0
        for member in self._queue:
            if member.answer.done() or self._key(member.item) in self._busy_keys:
                continue
            item_size = self._size(member.item)
            if group and size + item_size > self._max_size:
                break
            group.append(member)
            size += item_size
        return group, size

    async def _run(self, group: list[Member[Item, Result]]) -> None:
        try:
            await self._write(group)
        except Exception as e:  # a bug in write: its members must not wait for ever
            for member in group:
                member.fail(e)
        finally:
            for member in group:
                if not member.answer.done():  # cancelled, or write forgot one
                    member.answer.cancel()
            self._busy_keys -= {self._key(member.item) for member in group}
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.discard(task)
            self._start_writers()
