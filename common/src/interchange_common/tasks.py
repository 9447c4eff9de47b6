"""Background tasks a service runs beside its servers."""

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

_log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable["asyncio.Task[object]"]) -> None:
    """Cancel every task and wait until all have finished (they may clean up). A task
    that ended with an error is logged; the caller's own cancellation still reaches it."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task, result in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True), strict=True):
        if isinstance(result, Exception):
            _log.error("background task failed", extra={"task": task.get_name(), "error": type(result).__name__})


@contextlib.asynccontextmanager
async def background(*work: Coroutine[Any, Any, object]) -> AsyncIterator[list["asyncio.Task[object]"]]:
    """Run ``work`` as tasks for the length of a block; cancel and wait for them after."""
    tasks = [asyncio.create_task(item) for item in work]
    try:
        yield tasks
    finally:
        await cancel_and_wait(tasks)


class Probe(Protocol):
    """The one method of asyncpg.Connection that wait_alive uses."""

    async def fetchval(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109  # asyncpg's own signature
    ) -> object: ...


KEEPALIVE_SECONDS = 30.0
KEEPALIVE_TIMEOUT_SECONDS = 5.0


async def wait_alive(conn: Probe, event: asyncio.Event) -> None:
    """Wait for ``event`` on behalf of a session that holds a database connection;
    while nothing happens, check now and then that the connection still answers. A
    socket that died without a FIN (a cut network, a paused host) would otherwise
    leave the session waiting for ever; this raises instead, and run_forever starts
    a new one."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # A library swallowed our cancellation on its way here (a client that turns
        # it into an error it then handles, say): honour it now rather than wait.
        raise asyncio.CancelledError
    while not event.is_set():
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
            # that arrives just as the event is set, and the session would go on.
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                await event.wait()
        except TimeoutError:
            await conn.fetchval("SELECT 1", timeout=KEEPALIVE_TIMEOUT_SECONDS)


Session = Callable[[Callable[[], None]], Awaitable[None]]
_MAX_PAUSE_SECONDS = 10.0


async def run_forever(*, name: str, session: Session) -> None:
    """Run ``session`` again and again until cancelled.

    A session connects to what it needs, calls ``connected()`` once it is up (that
    resets the backoff), and works until something fails; it cleans up after
    itself. Whatever it raises (a broker, a channel, a database: background work
    must outlive them all) is logged and followed by a capped, jittered pause.
    """
    attempt = 0

    def connected() -> None:
        nonlocal attempt
        attempt = 0

    while True:
        try:
            await session(connected)
        except Exception as e:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A library turned our cancellation into an error of its own (a client
                # closing its connection in a ``finally``, say): stop all the same.
                raise asyncio.CancelledError from e
            _log.warning(f"{name} interrupted", extra={"error": type(e).__name__, "attempt": attempt + 1})
        attempt += 1
        pause = min(_MAX_PAUSE_SECONDS, 0.1 * 2 ** min(attempt, 10))
        await asyncio.sleep(random.uniform(0, pause))  # noqa: S311  # jitter


async def every(*, name: str, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
    """Run ``job`` now and then every ``seconds`` until cancelled (housekeeping such as
    purges); a run that fails is logged and tried again with run_forever's backoff."""

    async def session(connected: Callable[[], None]) -> None:
        while True:
            await job()
            connected()
            await asyncio.sleep(seconds)

    await run_forever(name=name, session=session)
