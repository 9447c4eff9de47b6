"""Background tasks a service runs beside its servers."""

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable["asyncio.Task[object]"]) -> None:
    """Cancel every task, then wait for each to finish (they may clean up)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
