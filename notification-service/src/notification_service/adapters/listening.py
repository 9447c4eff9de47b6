"""The shape of notification-service's outbox workers (mail, live push): a session for
``run_forever`` that LISTENs on a PostgreSQL channel and drains its table whenever a
commit NOTIFYs it, when a timer the drain asked for runs out, or when the connection
dies (the next query then ends the session, and run_forever starts a new one).

Every instance hears every commit's NOTIFY, and each instance drains what its own
commits added: the payload names the instance (``instance``). A NOTIFY from this
instance wakes the drain at once; any other (another instance's commit, one sent by
hand) within FOREIGN_WAKE_SECONDS, however many arrive meanwhile. So the instances do
not all wake for each commit to find the work taken, and what another instance could
not finish (it died right after its commit, its worker is down) is still taken soon.
"""

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from interchange_common.tasks import wait_alive

# Work through what is pending; the seconds until it should run again unwoken (None:
# only when woken).
Drain = Callable[[asyncpg.Connection], Awaitable[float | None]]

FOREIGN_WAKE_SECONDS = 1.0


async def drain_when_notified(
    *,
    dsn: str,
    channel: str,
    drain: Drain,
    connected: Callable[[], None],
    instance: str = "",
    foreign_wake_seconds: float = FOREIGN_WAKE_SECONDS,
) -> None:
    """One session: LISTEN, then drain and wait, again and again. Only a finished drain
    resets run_forever's backoff: a drain that keeps failing (a server that is down)
    makes every session fail, and the pauses between them grow."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    timer: asyncio.TimerHandle | None = None  # the drain's own
    foreign: asyncio.TimerHandle | None = None  # for NOTIFYs of other instances

    def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        nonlocal foreign
        if payload == instance:
            wake.set()
        elif foreign is None:
            foreign = loop.call_later(foreign_wake_seconds, wake.set)

    conn = await asyncpg.connect(dsn.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.add_listener(channel, notified)
        conn.add_termination_listener(lambda _: wake.set())
        while True:
            wake.clear()
            # This drain sees every commit heard of so far; a NOTIFY heard during it
            # wakes the next one.
            if foreign is not None:
                foreign.cancel()
                foreign = None
            again_in = await drain(conn)
            connected()
            if again_in is not None:
                timer = loop.call_later(max(again_in, 0.0), wake.set)
            await wait_alive(conn, wake)
            if timer is not None:
                timer.cancel()
                timer = None
    finally:
        for pending in (timer, foreign):
            if pending is not None:
                pending.cancel()
        conn.terminate()
