"""Sequencer leadership across two instances on one database."""

import asyncio
import uuid

import asyncpg
import pytest
from prometheus_client import REGISTRY

from devstack.testing import throwaway_database
from event_store.adapters.postgres import SEQUENCER_LOCK, Sequencer
from event_store.bootstrap import MIGRATIONS, build
from event_store.domain.model import ExpectedVersion, NewEvent
from interchange_common.migrations import upgrade
from interchange_common.tasks import background, cancel_and_wait

pytestmark = pytest.mark.integration


async def positioned(storage, event_id, *, timeout):
    async with asyncio.timeout(timeout):
        while True:
            seen = storage.sequenced.generation
            page = await storage.read_all(start=0, limit=1000)
            if any(event.id == event_id for event in page.events):
                return
            await storage.sequenced.wait(after=seen)


async def test_when_the_leader_loses_its_session_the_other_instance_takes_over(infra, settings_on):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_failover") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        dsn = url.replace("+asyncpg", "")
        first = await build(settings=settings_on(database_url=url, pool_size=4))
        second = await build(settings=settings_on(database_url=url, pool_size=4))
        tasks = [
            asyncio.create_task(component.run())
            for instance in (first, second)
            for component in (instance.sequencer, instance.listener)
        ]
        try:
            async with asyncio.timeout(10):
                while not (first.sequencer.is_leader or second.sequencer.is_leader):
                    await asyncio.sleep(0.02)
            leader, follower = (first, second) if first.sequencer.is_leader else (second, first)
            # Kill the leader's database session, as a network cut or a DBA would.
            admin = await asyncpg.connect(dsn)
            pid = await admin.fetchval(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
                " AND (l.classid::bigint << 32 | l.objid::bigint) = $1",
                SEQUENCER_LOCK,
            )
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await admin.close()
            # An append through the instance that led: its event must still get a position.
            event = NewEvent(uuid.uuid4(), "failover.test", {}, {})
            await leader.storage.append(
                stream_id=f"f-{uuid.uuid4()}", expected=ExpectedVersion.parse("any"), events=[event]
            )
            await positioned(follower.storage, event.id, timeout=15)
            assert follower.sequencer.is_leader or leader.sequencer.is_leader
        finally:
            await cancel_and_wait(tasks)
            await first.close()
            await second.close()


def sequencer_lag() -> tuple[float | None, float | None]:
    return (
        REGISTRY.get_sample_value("eventstore_sequencer_lag_events"),
        REGISTRY.get_sample_value("eventstore_sequencer_lag_seconds"),
    )


async def test_each_pass_tells_how_many_events_it_left_without_a_position_and_how_old(infra, settings_on):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_seqlag") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        writer = await build(settings=settings_on(database_url=url, pool_size=2))
        for _ in range(5):  # five commits of two events, while no sequencer runs
            events = [NewEvent(uuid.uuid4(), "lag.test", {}, {}) for _ in range(2)]
            await writer.storage.append(
                stream_id=f"l-{uuid.uuid4()}", expected=ExpectedVersion.parse("any"), events=events
            )
        after_each_pass: list[tuple[float | None, float | None]] = []
        passes_done = asyncio.Event()

        def note() -> None:
            after_each_pass.append(sequencer_lag())
            if len(after_each_pass) == 3:
                passes_done.set()

        sequencer = Sequencer(dsn=writer.settings.asyncpg_dsn, batch=2, on_sequenced=note)
        async with background(sequencer.run()):
            await asyncio.wait_for(passes_done.wait(), timeout=10)
        await writer.close()
    # Two commits a pass: 6 events left (the next two commits counted, the one past
    # them reckoned at their size), then 2, then none.
    assert [events for events, _ in after_each_pass] == [6, 2, 0]
    ages = [seconds for _, seconds in after_each_pass]
    assert all(age is not None and 0 < age < 10 for age in ages[:2])
    assert ages[2] == 0
    assert sequencer_lag() == (0, 0)  # a sequencer that stops leading leaves the telling to the next
