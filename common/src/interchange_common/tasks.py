"""Background tasks a service runs beside its servers."""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

_log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable["asyncio.Task[object]"]) -> None:
    """Cancel every task, then wait for each to finish (they may clean up)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
            _log.warning(f"{name} interrupted", extra={"error": type(e).__name__, "attempt": attempt + 1})
        attempt += 1
        await asyncio.sleep(random.uniform(0, min(_MAX_PAUSE_SECONDS, 0.1 * 2**attempt)))  # noqa: S311  # jitter
