"""A throwaway database with the event store's schema, and storage on it with its
sequencer and change listener running, for this test session."""

import asyncio
import contextlib

import pytest

from devstack.testing import throwaway_database
from event_store.adapters.memory import InMemoryEventStorage
from event_store.bootstrap import MIGRATIONS, build_storage
from interchange_common.migrations import upgrade


@pytest.fixture(scope="session")
async def database_url(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_events") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        yield url


@pytest.fixture(scope="session")
def dsn(database_url):
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
async def postgres(dsn):
    components = await build_storage(dsn=dsn, pool_size=40)
    tasks = [asyncio.create_task(components.sequencer.run()), asyncio.create_task(components.listener.run())]
    yield components
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await components.pool.close()


@pytest.fixture(params=["memory", "postgres"])
def storage(request):
    """The contract suite runs once per backend."""
    if request.param == "memory":
        return InMemoryEventStorage()
    return request.getfixturevalue("postgres").storage
