"""The shared engine on the real PostgreSQL: a connection that sat idle is tested
before use and replaced when its server side is gone; a busy one is not tested."""

import pytest
from sqlalchemy import text

from devstack.testing import throwaway_database
from interchange_common.database import create_engine

pytestmark = pytest.mark.integration


@pytest.fixture
async def url(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_common_db") as url:
        yield url


async def _backend_pid(engine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT pg_backend_pid()")))


async def _terminate(engine, pid: int) -> None:
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


async def test_an_idle_connection_whose_server_side_is_gone_is_replaced_before_use(url):
    engine = create_engine(url=url, pool_size=1, ping_after_idle_seconds=0)
    other = create_engine(url=url, pool_size=1)
    try:
        first = await _backend_pid(engine)
        await _terminate(other, first)
        assert await _backend_pid(engine) != first  # no error: the dead one was swapped at checkout
    finally:
        await engine.dispose()
        await other.dispose()


async def test_a_connection_in_use_a_moment_ago_is_not_pinged(url, monkeypatch):
    engine = create_engine(url=url, pool_size=1, ping_after_idle_seconds=60)
    pings = _count_pings(engine, monkeypatch)
    try:
        for _ in range(5):
            await _backend_pid(engine)
        assert pings == []
    finally:
        await engine.dispose()


async def test_a_connection_idle_past_the_threshold_is_pinged(url, monkeypatch):
    engine = create_engine(url=url, pool_size=1, ping_after_idle_seconds=0)
    pings = _count_pings(engine, monkeypatch)
    try:
        for _ in range(3):
            await _backend_pid(engine)
        assert len(pings) == 2  # every checkout but the first, of a new connection
    finally:
        await engine.dispose()


def _count_pings(engine, monkeypatch):
    pings: list[object] = []
    dialect = engine.sync_engine.dialect
    ping = dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings
