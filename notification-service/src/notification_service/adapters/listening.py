"""The shape of notification-service's outbox workers (mail, live push): a session for
``run_forever`` that LISTENs on a PostgreSQL channel and drains its table whenever a
commit NOTIFYs it, when a timer the drain asked for runs out, or when the connection
dies (the next query then ends the session, and run_forever starts a new one)."""

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from interchange_common.tasks import wait_alive

# Work through what is pending; the seconds until it should run again unwoken (None:
# only when woken).
Drain = Callable[[asyncpg.Connection], Awaitable[float | None]]


async def drain_when_notified(*, dsn: str, channel: str, drain: Drain, connected: Callable[[], None]) -> None:
    """One session: LISTEN, then drain and wait, again and again. Only a finished drain
    resets run_forever's backoff: a drain that keeps failing (a server that is down)
    makes every session fail, and the pauses between them grow."""
    wake = asyncio.Event()
    conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://", 1))
    timer: asyncio.TimerHandle | None = None
    try:
        await conn.add_listener(channel, lambda *_: wake.set())
        conn.add_termination_listener(lambda _: wake.set())
        while True:
            wake.clear()
            again_in = await drain(conn)
            connected()
            if again_in is not None:
                timer = asyncio.get_running_loop().call_later(max(again_in, 0.0), wake.set)
            await wait_alive(conn, wake)
            if timer is not None:
                timer.cancel()
                timer = None
    finally:
        if timer is not None:
            timer.cancel()
        conn.terminate()
