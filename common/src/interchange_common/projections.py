"""Projections: events in global order into a read model, each exactly once.

    EventSource        where events come from: catch-up then live, from a position
                       (GrpcEventSource reads event-store's Subscribe)
    ReadAhead          a subscription read ahead into a bounded buffer, taken in
                       batches of whatever has come
    ProjectionRunner   applies the events in batches: every event that has come (up to
                       ``max_batch``) goes to the handler in one database transaction,
                       which also moves the checkpoint, so the read model and the
                       checkpoint never disagree: a crash anywhere re-applies nothing
                       and skips nothing. The checkpoint row is locked for the
                       transaction, so two runners of one projection cannot both
                       apply an event; the one that finds a batch applied by the other
                       then waits a little (``linger_seconds``) to go over more events
                       at once. ``rebuild`` clears the model and starts from 0.
                       After each batch it sets how far behind it is: the events
                       waiting in the read-ahead buffer, and the age of the last
                       event gone over (0 once none waits).

The owning service's migrations create ``projection_checkpoints`` (see ``checkpoints``).
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

import grpc
import orjson
from prometheus_client import Gauge
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from interchange_common import tracing
from interchange_common.contracts import eventstore_pb2, eventstore_pb2_grpc
from interchange_common.events import RecordedEvent
from interchange_common.signal import Signal

_log = logging.getLogger(__name__)

metadata = MetaData()
checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# Applies events, in the order given, inside the runner's transaction.
Handler = Callable[[AsyncConnection, Sequence[RecordedEvent]], Awaitable[None]]
Reset = Callable[[AsyncConnection], Awaitable[None]]
MAX_BATCH = 500
LINGER_SECONDS = 0.5
LAG_SECONDS = Gauge(
    "projection_lag_seconds", "Age of the last event the projection went over (0: none waits)", ["projection"]
)
LAG_EVENTS = Gauge("projection_lag_events", "Events received but not yet applied (read ahead)", ["projection"])


class EventSource(Protocol):
    def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        """Every event from global position ``start`` on, then new ones as they come."""


class GrpcEventSource:
    """event-store's Subscribe over gRPC (the channel carries the service token)."""

    def __init__(self, *, channel: grpc.aio.Channel) -> None:
        self._stub = eventstore_pb2_grpc.EventStoreStub(channel)

    async def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        async for message in self._stub.Subscribe(eventstore_pb2.SubscribeRequest(start=start)):
            yield from_proto(message)


def from_proto(message: eventstore_pb2.RecordedEvent) -> RecordedEvent:
    return RecordedEvent(
        id=uuid.UUID(message.id),
        stream_id=message.stream_id,
        type=message.type,
        data=orjson.loads(message.data) if message.data else {},
        metadata=orjson.loads(message.metadata) if message.metadata else {},
        version=message.version,
        position=message.position or None,
        recorded_at=message.recorded_at.ToDatetime(tzinfo=UTC),
    )


class ReadAhead:
    """``events`` read by a task of its own into a buffer of ``size`` events, for the
    length of an ``async with`` block. The reader waits while the buffer is full, so
    a slow consumer slows the subscription down instead of piling events up.

    ``take`` hands over every event that has come, at most ``most``, waiting only for
    the first (with ``linger``, that many seconds more, unless ``most`` come sooner);
    once the events have ended it returns an empty list, or raises what ended them."""

    def __init__(self, events: AsyncGenerator[RecordedEvent, None], *, size: int) -> None:
        self._events = events
        # None marks the end (the reader's error, if any, in _error).
        self._buffer: asyncio.Queue[RecordedEvent | None] = asyncio.Queue(maxsize=size)
        self._error: Exception | None = None
        self._end_queued = False
        self._ended = False
        self._reader: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many events have come and wait to be taken."""
        return self._buffer.qsize() - (1 if self._end_queued and not self._ended else 0)

    async def __aenter__(self) -> "ReadAhead":
        self._reader = asyncio.create_task(self._read(), name="read-ahead")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            # Our own cancellation, arriving here, leaves the generator to its finalizer.
            await asyncio.wait({self._reader})
        await self._events.aclose()

    async def _read(self) -> None:
        try:
            async for event in self._events:
                await self._buffer.put(event)
        except Exception as e:  # the consumer raises it, after the events that came before
            self._error = e
        await self._buffer.put(None)
        self._end_queued = True

    async def take(self, *, most: int, linger: float = 0.0) -> list[RecordedEvent]:
        batch: list[RecordedEvent] = []
        if self._ended:
            return self._end()
        event = await self._buffer.get()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(linger or None):
                while event is not None:
                    batch.append(event)
                    if len(batch) >= most or (self._buffer.empty() and not linger):
                        return batch
                    event = await self._buffer.get()
                self._ended = True
        return batch or self._end()

    def _end(self) -> list[RecordedEvent]:
        if self._error is not None:
            raise self._error
        return []


class ProjectionRunner:
    def __init__(
        self,
        *,
        name: str,
        engine: AsyncEngine,
        source: EventSource,
        handler: Handler,
        max_batch: int = MAX_BATCH,
        linger_seconds: float = LINGER_SECONDS,
    ) -> None:
        if max_batch < 1:
            raise ValueError("a batch holds at least one event")
        self._name = name
        self._engine = engine
        self._source = source
        self._handler = handler
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._create = insert(checkpoints).values(name=name, position=0).on_conflict_do_nothing(index_elements=["name"])
        self._read = select(checkpoints.c.position).where(checkpoints.c.name == name)
        self._lock = self._read.with_for_update()
        self._move = update(checkpoints).where(checkpoints.c.name == name).values(position=bindparam("reached"))
        self._handled_up_to = 0
        self._lag_seconds = LAG_SECONDS.labels(projection=name)
        self._lag_events = LAG_EVENTS.labels(projection=name)
        # Fires after each batch is committed (or found applied by another runner):
        # whoever waits for the read model to reach a point waits on it (no polling).
        self.applied = Signal()

    @property
    def handled_up_to(self) -> int:
        """The global position of the last event this runner has gone over: applied
        by it, or found applied by another runner (0: none yet)."""
        return self._handled_up_to

    async def position(self) -> int:
        """The global position of the last event applied (0: none yet)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(self._read)
        return int(found or 0)

    async def run(self, *, stop_after: int | None = None) -> int:
        """Apply events as they come; returns after ``stop_after`` events (None: never).

        A runner that finds its whole batch applied by another runner of the projection
        collects events for ``linger_seconds`` before it tries again: of two runners, one
        applies as events come, the other goes over them in large batches now and then,
        and takes over within that time if the first stops."""
        applied = 0
        while stop_after is None or applied < stop_after:
            start = await self._start()
            async with ReadAhead(self._source.subscribe(start=start + 1), size=self._max_batch) as events:
                linger = 0.0
                while stop_after is None or applied < stop_after:
                    batch = await events.take(most=self._max_batch, linger=linger)
                    if not batch:
                        break  # the subscription ended: subscribe again
                    outcome = await self._apply(batch, most=None if stop_after is None else stop_after - applied)
                    applied += outcome.applied
                    self._note_lag(last=batch[-1], waiting=events.waiting)
                    if not outcome.in_step:
                        break  # the checkpoint moved back (a rebuild): read again from there
                    linger = self._linger if outcome.applied_by_another else 0.0
        return applied

    def _note_lag(self, *, last: RecordedEvent, waiting: int) -> None:
        self._lag_events.set(waiting)
        self._lag_seconds.set(max(0.0, (datetime.now(UTC) - last.recorded_at).total_seconds()) if waiting else 0.0)

    async def _start(self) -> int:
        """The checkpoint, created at 0 if the projection has none yet."""
        async with self._engine.begin() as conn:
            await conn.execute(self._create)
            found = await conn.scalar(self._read)
        return int(found or 0)

    async def _apply(self, batch: Sequence[RecordedEvent], *, most: int | None) -> "_Outcome":
        """Apply, in one transaction, the events of ``batch`` that are not applied yet
        (at most ``most``)."""
        positions = [_position(event) for event in batch]
        # One span for the batch, linked to the span that recorded each event (the
        # batch serves many requests; the SDK keeps the first 128 links).
        links = tracing.links_to(event.metadata.get(tracing.TRACEPARENT) for event in batch)
        with tracing.span(f"project {self._name}", root=True, links=links):
            async with self._engine.begin() as conn:
                # Locked until commit: another runner of this projection waits here, then
                # sees the new position and skips what this one applied.
                current = await conn.scalar(self._lock)
                if current is None:
                    return _Outcome(applied=0, in_step=False, applied_by_another=False)  # _start creates the row again
                todo, in_step = _following(batch, positions, after=int(current), most=most)
                if todo:
                    await self._handler(conn, todo)
                    await conn.execute(self._move, {"reached": _position(todo[-1])})
        reached = _position(todo[-1]) if todo else int(current)
        gone_over = [position for position in positions if position <= reached]
        if gone_over:
            self._handled_up_to = max(self._handled_up_to, *gone_over)
            # Skipped events too: readers waiting on this runner must hear of them.
            self.applied.fire()
        return _Outcome(applied=len(todo), in_step=in_step, applied_by_another=not todo and bool(gone_over))

    async def rebuild(self, *, reset: Reset) -> None:
        """Empty the read model (``reset``) and the checkpoint together; ``run`` then
        applies everything again from position 1."""
        async with self._engine.begin() as conn:
            await reset(conn)
            await conn.execute(
                insert(checkpoints)
                .values(name=self._name, position=0)
                .on_conflict_do_update(index_elements=["name"], set_={"position": 0})
            )
        _log.info("projection reset", extra={"projection": self._name})


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What became of a batch: how many of its events this runner applied; False for
    ``in_step`` when the batch does not go on from the checkpoint (the subscription
    must start again from there); ``applied_by_another`` when another runner had
    applied the whole batch already."""

    applied: int
    in_step: bool
    applied_by_another: bool


def _position(event: RecordedEvent) -> int:
    if event.position is None:
        raise ValueError("a projection needs events with global positions")
    return event.position


def _following(
    batch: Sequence[RecordedEvent], positions: Sequence[int], *, after: int, most: int | None
) -> tuple[list[RecordedEvent], bool]:
    """The events of ``batch`` that follow position ``after`` one by one (at most
    ``most``), and False if a gap comes first: positions are dense, so a gap means
    that the checkpoint went back under the subscription (a rebuild)."""
    following: list[RecordedEvent] = []
    for event, position in zip(batch, positions, strict=True):
        if position <= after:
            continue  # applied already
        if most is not None and len(following) >= most:
            break
        if position != after + 1:
            return following, False
        following.append(event)
        after = position
    return following, True
