"""Migration 0002 on a database with events: each becomes a commit of its own, keeps
its position (or gets the next one from the sequencer), and appends go on densely."""

import asyncio
import uuid

import asyncpg
import pytest
from alembic import command

from devstack.testing import throwaway_database
from event_store.bootstrap import MIGRATIONS, build
from event_store.domain.model import ExpectedVersion, NewEvent
from interchange_common.migrations import alembic_config
from interchange_common.tasks import cancel_and_wait

pytestmark = pytest.mark.integration


def migrate(url, revision, *, down=False):
    config = alembic_config(script_location=MIGRATIONS, database_url=url)
    (command.downgrade if down else command.upgrade)(config, revision)


async def test_events_stored_before_commits_keep_their_positions(infra, settings_on):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_events_0002") as url:
        await asyncio.to_thread(migrate, url, "0001")
        dsn = url.replace("+asyncpg", "")
        x, y = f"x-{uuid.uuid4()}", f"y-{uuid.uuid4()}"
        old = [uuid.uuid4() for _ in range(3)]
        conn = await asyncpg.connect(dsn)
        try:
            await conn.executemany(
                "INSERT INTO events (id, stream_id, version, type, data, metadata, position)"
                " VALUES ($1, $2, $3, 'old.event', '{}', '{}', $4)",
                [(old[0], x, 1, 1), (old[1], x, 2, 2), (old[2], y, 1, None)],  # the last not yet numbered
            )
        finally:
            await conn.close()

        await asyncio.to_thread(migrate, url, "head")
        container = await build(settings=settings_on(database_url=url, pool_size=4))
        sequencer = asyncio.create_task(container.sequencer.run())
        try:
            added = NewEvent(uuid.uuid4(), "new.event", {}, {})
            await container.storage.append(stream_id=y, expected=ExpectedVersion.exact(1), events=[added])
            async with asyncio.timeout(10):
                while True:
                    seen = container.storage.sequenced.generation
                    page = await container.storage.read_all(start=0, limit=10)
                    if len(page.events) == 4:
                        break
                    await container.storage.sequenced.wait(after=seen)
        finally:
            await cancel_and_wait([sequencer])
            await container.close()
        assert [(event.id, event.stream_id, event.version, event.position) for event in page.events] == [
            (old[0], x, 1, 1),
            (old[1], x, 2, 2),
            (old[2], y, 1, 3),
            (added.id, y, 2, 4),
        ]

        await asyncio.to_thread(migrate, url, "0001", down=True)
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT id, position FROM events ORDER BY seq")
            assert [(row["id"], row["position"]) for row in rows] == [
                (old[0], 1),
                (old[1], 2),
                (old[2], 3),
                (added.id, 4),
            ]
        finally:
            await conn.close()
