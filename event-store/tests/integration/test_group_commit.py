"""Group commit on the real PostgreSQL: appends written together in one commit each
get the answer they would get one after another (the in-memory backend, which takes
one lock per append, says what that is); one member's failure is its own; an outage
fails the whole group with EventStorageUnavailable and writes nothing.

To make a group for sure, the storage gets one group writer and the test keeps it
busy: a first append waits on a lock of the commits table that the test holds, and
everything appended meanwhile queues up for the next group."""

import asyncio
import contextlib
import uuid

import asyncpg
import pytest

from devstack.testing import throwaway_database
from event_store.adapters.errors import EventStorageUnavailable
from event_store.adapters.memory import InMemoryEventStorage
from event_store.adapters.postgres import PostgresEventStorage
from event_store.bootstrap import MIGRATIONS
from event_store.domain.errors import WrongExpectedVersion
from event_store.domain.model import Decision, Direction, ExpectedVersion, NewEvent
from interchange_common.migrations import upgrade

pytestmark = pytest.mark.integration
ANY = ExpectedVersion.parse("any")
NO_STREAM = ExpectedVersion.parse("no_stream")


def stream(name):
    return f"{name}-{uuid.uuid4()}"


def new(n=1, data=None):
    return [NewEvent(uuid.uuid4(), "group.tested", data or {"i": i}, {}) for i in range(n)]


async def nothing_appended():
    return None


async def until(condition, *, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def one_group_writer(url):
    dsn = url.replace("+asyncpg", "")
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=8)
    try:
        yield PostgresEventStorage(pool=pool, on_appended=nothing_appended, group_writers=1, large_group_writers=0), dsn
    finally:
        pool.terminate()


@contextlib.asynccontextmanager
async def writer_held(storage, dsn):
    """The storage's group writer busy with an append that waits on a lock of the
    commits table; yields the connection that holds the lock (closing the block
    releases it). The held append's own task is returned to the caller as well."""
    admin = await asyncpg.connect(dsn)
    try:
        transaction = admin.transaction()
        await transaction.start()
        await admin.execute("LOCK TABLE commits IN SHARE MODE")
        plug = asyncio.create_task(storage.append(stream_id=stream("plug"), expected=ANY, events=new()))

        async def plug_waits():
            return await admin.fetchval(
                "SELECT count(*) FROM pg_locks WHERE relation = 'commits'::regclass AND NOT granted"
            )

        await until(plug_waits)
        yield admin, plug
        if not admin.is_closed():
            await transaction.rollback()
    finally:
        if not admin.is_closed():
            await admin.close()


async def in_one_group(storage, dsn, appends):
    """Each (stream, expected, events) appended while the writer is held, so that all
    go out as one group once it is free; their outcomes (a Decision or an error)."""
    async with writer_held(storage, dsn) as (_, plug):
        tasks = [
            asyncio.create_task(storage.append(stream_id=s, expected=expected, events=events))
            for s, expected, events in appends
        ]

        async def all_queued():
            return storage.appends_waiting == len(appends)

        await until(all_queued)
    await plug
    return await asyncio.gather(*tasks, return_exceptions=True)


def outcome(result):
    if isinstance(result, Decision):
        return ("appended", result.first_version, result.last_version, result.already_recorded)
    if isinstance(result, WrongExpectedVersion):
        return ("conflict", result.actual)
    return (type(result).__name__,)


@pytest.fixture
async def group_storage(database_url):
    async with one_group_writer(database_url) as (storage, dsn):
        yield storage, dsn


async def test_a_group_answers_each_member_as_a_one_by_one_run_would(group_storage):
    storage, dsn = group_storage
    reference = InMemoryEventStorage()
    a, b, c, d, e = (stream(name) for name in "abcde")
    before_b = new(2)
    for backend in (storage, reference):
        await backend.append(stream_id=b, expected=NO_STREAM, events=before_b)
    a1, c12 = new(), new(2)
    appends = [
        (a, NO_STREAM, a1),
        (a, ExpectedVersion.exact(1), new()),  # right after the member before it
        (a, ExpectedVersion.exact(1), new()),  # lost to the member before it
        (b, ExpectedVersion.exact(2), new()),
        (b, ExpectedVersion.exact(1), new()),  # stale
        (b, NO_STREAM, before_b),  # a writer repeating what it already wrote: a replay
        (c, ANY, c12),
        (c, ANY, c12),  # the same again, in the same group: a replay too
        (d, ANY, a1),  # an id recorded in another stream
        (e, ExpectedVersion.parse("stream_exists"), new()),
        (e, ANY, new(3)),
    ]

    results = await in_one_group(storage, dsn, appends)

    expected: list[Decision | WrongExpectedVersion] = []
    for s, version, events in appends:
        try:
            expected.append(await reference.append(stream_id=s, expected=version, events=events))
        except WrongExpectedVersion as error:
            expected.append(error)
    assert [outcome(result) for result in results] == [outcome(result) for result in expected]
    assert [outcome(result)[0] for result in results].count("conflict") == 4
    for s in (a, b, c, d, e):
        mine = await storage.read_stream(stream_id=s, start=0, direction=Direction.FORWARD, limit=100)
        theirs = await reference.read_stream(stream_id=s, start=0, direction=Direction.FORWARD, limit=100)
        assert [(event.id, event.version) for event in mine.events] == [
            (event.id, event.version) for event in theirs.events
        ]
    written = [
        event.id
        for (_, _, events), result in zip(appends, results, strict=True)
        for event in events
        if isinstance(result, Decision) and not result.already_recorded
    ]
    async with contextlib.AsyncExitStack() as stack:
        conn = await asyncpg.connect(dsn)
        stack.push_async_callback(conn.close)
        commits = await conn.fetchval("SELECT count(DISTINCT commit_id) FROM events WHERE id = ANY($1)", written)
    assert commits == 1  # one group, one commit


async def test_many_concurrent_writers_at_exact_versions_each_get_their_own_answer(group_storage):
    storage, _ = group_storage
    streams = [stream("w") for _ in range(5)]
    for s in streams:
        await storage.append(stream_id=s, expected=NO_STREAM, events=new())
    # Four writers per stream at version 1: one wins on each, the others conflict.
    results = await asyncio.gather(
        *(storage.append(stream_id=s, expected=ExpectedVersion.exact(1), events=new()) for s in streams * 4),
        return_exceptions=True,
    )
    for s in streams:
        mine = [result for target, result in zip(streams * 4, results, strict=True) if target == s]
        assert sum(isinstance(result, Decision) for result in mine) == 1
        assert all(result.actual == 2 for result in mine if isinstance(result, WrongExpectedVersion))
        assert await storage.stream_version(stream_id=s) == 2


async def test_a_member_postgresql_refuses_fails_alone(group_storage):
    storage, dsn = group_storage
    good, bad, later = stream("good"), stream("bad"), stream("later")
    appends = [
        (good, NO_STREAM, new()),
        (bad, NO_STREAM, new(data={"text": "nul \x00 inside"})),  # jsonb cannot hold it
        (later, NO_STREAM, new(2)),
    ]
    results = await in_one_group(storage, dsn, appends)
    assert outcome(results[0]) == ("appended", 1, 1, False)
    assert isinstance(results[1], EventStorageUnavailable)
    assert outcome(results[2]) == ("appended", 1, 2, False)
    assert await storage.stream_version(stream_id=bad) == 0


async def test_a_replay_of_events_recorded_earlier_does_not_fail_the_others(group_storage):
    storage, dsn = group_storage
    s, other = stream("s"), stream("other")
    recorded = new(2)
    await storage.append(stream_id=s, expected=ANY, events=recorded)
    appends = [
        (other, NO_STREAM, new()),
        (s, ANY, recorded),  # taken as new by the group: the unique key says otherwise
        (s, ExpectedVersion.exact(2), new()),
    ]
    results = await in_one_group(storage, dsn, appends)
    assert [outcome(result) for result in results] == [
        ("appended", 1, 1, False),
        ("appended", 1, 2, True),
        ("appended", 3, 3, False),
    ]


async def test_a_database_outage_fails_the_whole_group_and_writes_nothing(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_group_outage") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        name = url.rsplit("/", 1)[1]
        server = await asyncpg.connect(infra.postgres_url.replace("+asyncpg", ""))
        try:
            async with one_group_writer(url) as (storage, dsn):
                streams = [stream("o") for _ in range(6)]
                async with writer_held(storage, dsn) as (admin, plug):
                    tasks = [
                        asyncio.create_task(storage.append(stream_id=s, expected=NO_STREAM, events=new()))
                        for s in streams
                    ]

                    async def all_queued():
                        return storage.appends_waiting == len(streams)

                    await until(all_queued)
                    # The database goes away under the group writer: every session is
                    # ended (the lock holder's last) and no new one is let in.
                    await server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                    await server.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2",
                        name,
                        await admin.fetchval("SELECT pg_backend_pid()"),
                    )
                    await admin.close()
                with pytest.raises(EventStorageUnavailable):
                    await plug
                results = await asyncio.gather(*tasks, return_exceptions=True)
                assert all(isinstance(result, EventStorageUnavailable) for result in results), results
            await server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            check = await asyncpg.connect(url.replace("+asyncpg", ""))
            try:
                assert await check.fetchval("SELECT count(*) FROM events WHERE stream_id = ANY($1)", streams) == 0
            finally:
                await check.close()
        finally:
            await server.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await server.close()
