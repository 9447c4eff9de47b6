"""The outbox workers' wake-ups on PostgreSQL NOTIFY: at once for this instance's own
commits; for other instances' a moment later, once however many arrive."""

import asyncio

import pytest

from interchange_common.tasks import background
from notification_service.adapters.listening import drain_when_notified

pytestmark = pytest.mark.integration

CHANNEL = "test_wakes"


class Drains:
    """A drain that only counts when it runs."""

    def __init__(self):
        self.times: list[float] = []
        self._ran = asyncio.Event()

    async def __call__(self, conn):
        self.times.append(asyncio.get_running_loop().time())
        self._ran.set()

    async def wait_for(self, count, *, timeout=15.0):
        async with asyncio.timeout(timeout):
            while len(self.times) < count:
                self._ran.clear()
                await self._ran.wait()


def listening(database_url, drains, *, foreign_wake_seconds):
    return drain_when_notified(
        dsn=database_url,
        channel=CHANNEL,
        drain=drains,
        connected=lambda: None,
        instance="this-instance",
        foreign_wake_seconds=foreign_wake_seconds,
    )


async def test_notifies_of_other_instances_wake_once_a_moment_later(database_url, db):
    drains = Drains()
    async with background(listening(database_url, drains, foreign_wake_seconds=0.5)):
        await drains.wait_for(1)  # the first drain, at the start
        sent = asyncio.get_running_loop().time()
        # Ten of another instance's (heard together: a slow test run cannot spread them
        # across the wake).
        await db.execute("SELECT pg_notify($1, 'other-instance-' || n) FROM generate_series(1, 10) AS n", CHANNEL)
        await drains.wait_for(2)
        assert drains.times[1] - sent >= 0.5
        # One of this instance's own: at once, and the ten above woke nothing more.
        await db.execute("SELECT pg_notify($1, 'this-instance')", CHANNEL)
        await drains.wait_for(3)
    assert len(drains.times) == 3


async def test_notifies_of_this_instance_wake_at_once(database_url, db):
    drains = Drains()
    async with background(listening(database_url, drains, foreign_wake_seconds=3600)):
        await drains.wait_for(1)
        await db.execute("SELECT pg_notify($1, 'other-instance')", CHANNEL)  # its wake is an hour away
        await db.execute("SELECT pg_notify($1, 'this-instance')", CHANNEL)
        await drains.wait_for(2)  # long before that hour
