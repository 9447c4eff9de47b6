"""The storage contract, written once, run against the in-memory and PostgreSQL backends."""

import asyncio
import uuid

import pytest

from event_store.domain.errors import SnapshotNotFound, WrongExpectedVersion
from event_store.domain.model import Direction, ExpectedVersion, NewEvent

pytestmark = pytest.mark.integration
ANY = ExpectedVersion.parse("any")


def stream():
    return f"order-{uuid.uuid4()}"


def new(n=1, type_="order.created"):
    return [NewEvent(uuid.uuid4(), type_, {"i": i, "text": "ünïcödé"}, {"correlation_id": "c-1"}) for i in range(n)]


async def all_after(storage, *, start, streams, count, timeout=5.0):
    """Events from ``start`` in global order, once ``count`` of those in ``streams`` have
    positions (events an earlier test appended may be sequenced after ``start`` too)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        seen = storage.sequenced.generation
        page = await storage.read_all(start=start, limit=1000)
        if sum(1 for event in page.events if event.stream_id in streams) >= count:
            return page.events
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"only {len(page.events)} of {count} events got positions")
        try:
            await asyncio.wait_for(storage.sequenced.wait(after=seen), timeout=remaining)
        except TimeoutError:
            continue


async def head(storage):
    """The next free global position right now (other tests share the database)."""
    page = await storage.read_all(start=0, limit=1)
    if not page.events:
        return 1
    last = page.events[-1].position
    while True:
        more = await storage.read_all(start=last + 1, limit=1000)
        if not more.events:
            return last + 1
        last = more.events[-1].position


async def test_appends_get_contiguous_versions_and_read_back(storage):
    s = stream()
    first = await storage.append(stream_id=s, expected=ExpectedVersion.parse("no_stream"), events=new(2))
    second = await storage.append(stream_id=s, expected=ExpectedVersion.parse(2), events=new(3))
    assert (first.first_version, first.last_version) == (1, 2)
    assert (second.first_version, second.last_version) == (3, 5)
    page = await storage.read_stream(stream_id=s, start=0, direction=Direction.FORWARD, limit=100)
    assert [event.version for event in page.events] == [1, 2, 3, 4, 5]
    assert page.events[0].data == {"i": 0, "text": "ünïcödé"}
    assert page.events[0].metadata == {"correlation_id": "c-1"}
    assert page.end
    assert await storage.stream_version(stream_id=s) == 5


@pytest.mark.parametrize(
    ("expected", "current_after_setup"),
    [("no_stream", 1), ("stream_exists", 0), (3, 1), (0, 1)],
)
async def test_a_wrong_expectation_is_a_conflict_with_the_actual_version(storage, expected, current_after_setup):
    s = stream()
    if current_after_setup:
        await storage.append(stream_id=s, expected=ANY, events=new(current_after_setup))
    with pytest.raises(WrongExpectedVersion) as error:
        await storage.append(stream_id=s, expected=ExpectedVersion.parse(expected), events=new())
    assert error.value.actual == current_after_setup
    assert await storage.stream_version(stream_id=s) == current_after_setup


async def test_the_same_events_again_are_not_written_twice(storage):
    s = stream()
    batch = new(2)
    await storage.append(stream_id=s, expected=ExpectedVersion.parse("no_stream"), events=batch)
    again = await storage.append(stream_id=s, expected=ExpectedVersion.parse("no_stream"), events=batch)
    assert (again.first_version, again.last_version, again.already_recorded) == (1, 2, True)
    assert await storage.stream_version(stream_id=s) == 2


async def test_an_overlapping_different_batch_is_a_conflict_and_writes_nothing(storage):
    s = stream()
    batch = new(2)
    await storage.append(stream_id=s, expected=ANY, events=batch)
    with pytest.raises(WrongExpectedVersion):
        await storage.append(stream_id=s, expected=ExpectedVersion.parse(2), events=[batch[1], *new(1)])
    with pytest.raises(WrongExpectedVersion):
        await storage.append(stream_id=stream(), expected=ANY, events=batch)
    assert await storage.stream_version(stream_id=s) == 2


async def test_reads_page_forward_and_backward(storage):
    s = stream()
    await storage.append(stream_id=s, expected=ANY, events=new(7))
    forward = await storage.read_stream(stream_id=s, start=3, direction=Direction.FORWARD, limit=3)
    assert [e.version for e in forward.events] == [3, 4, 5]
    assert (forward.next, forward.end) == (6, False)
    backward = await storage.read_stream(stream_id=s, start=0, direction=Direction.BACKWARD, limit=3)
    assert [e.version for e in backward.events] == [7, 6, 5]
    rest = await storage.read_stream(stream_id=s, start=backward.next, direction=Direction.BACKWARD, limit=10)
    assert [e.version for e in rest.events] == [4, 3, 2, 1]
    assert rest.end
    empty = await storage.read_stream(stream_id=stream(), start=0, direction=Direction.FORWARD, limit=10)
    assert (empty.events, empty.end) == ([], True)


async def test_read_all_is_in_global_order_across_streams(storage):
    start = await head(storage)
    a, b = stream(), stream()
    for s in (a, b, a, b):
        await storage.append(stream_id=s, expected=ANY, events=new())
    events = await all_after(storage, start=start, streams={a, b}, count=4)
    mine = [event for event in events if event.stream_id in (a, b)]
    assert [(event.stream_id, event.version) for event in mine] == [(a, 1), (b, 1), (a, 2), (b, 2)]
    positions = [event.position for event in events]
    assert positions == list(range(start, start + len(events)))


async def test_snapshots_keep_the_latest(storage):
    s = stream()
    with pytest.raises(SnapshotNotFound):
        await storage.load_snapshot(stream_id=s)
    await storage.append(stream_id=s, expected=ANY, events=new(5))
    await storage.save_snapshot(stream_id=s, version=4, data={"total": 4})
    kept = await storage.save_snapshot(stream_id=s, version=2, data={"total": 2})
    assert (kept.version, kept.data) == (4, {"total": 4})
    loaded = await storage.load_snapshot(stream_id=s)
    assert (loaded.version, loaded.data) == (4, {"total": 4})
    await storage.save_snapshot(stream_id=s, version=5, data={"total": 5})
    assert (await storage.load_snapshot(stream_id=s)).version == 5


async def test_fifty_concurrent_appends_at_one_version_one_wins(storage):
    s = stream()
    await storage.append(stream_id=s, expected=ANY, events=new(1))
    results = await asyncio.gather(
        *(storage.append(stream_id=s, expected=ExpectedVersion.parse(1), events=new(1)) for _ in range(50)),
        return_exceptions=True,
    )
    wins = [result for result in results if not isinstance(result, BaseException)]
    conflicts = [result for result in results if isinstance(result, WrongExpectedVersion)]
    assert len(wins) == 1
    assert len(conflicts) == 49
    assert all(conflict.actual == 2 for conflict in conflicts)
    page = await storage.read_stream(stream_id=s, start=0, direction=Direction.FORWARD, limit=100)
    assert [event.version for event in page.events] == [1, 2]


async def test_concurrent_appends_with_any_all_land_without_gaps(storage):
    s = stream()
    await asyncio.gather(*(storage.append(stream_id=s, expected=ANY, events=new(2)) for _ in range(20)))
    page = await storage.read_stream(stream_id=s, start=0, direction=Direction.FORWARD, limit=100)
    assert [event.version for event in page.events] == list(range(1, 41))


async def test_ten_writers_and_two_tailing_readers_see_everything_once_in_order(storage):
    start = await head(storage)
    streams = [stream() for _ in range(10)]
    per_writer = 30
    total = len(streams) * per_writer

    async def writer(s):
        for _ in range(per_writer):
            await storage.append(stream_id=s, expected=ANY, events=new())

    async def reader():
        """Tails "all" from where the test started, as a live subscriber would."""
        seen = []
        cursor = start
        while True:
            generation = storage.sequenced.generation
            page = await storage.read_all(start=cursor, limit=100)
            seen.extend(page.events)
            cursor = page.next
            if sum(1 for event in seen if event.stream_id in streams) == total:
                return seen
            if page.end:
                await asyncio.wait_for(storage.sequenced.wait(after=generation), timeout=10)

    readers = [asyncio.create_task(reader()) for _ in range(2)]
    await asyncio.gather(*(writer(s) for s in streams))
    for events in await asyncio.gather(*readers):
        mine = [event for event in events if event.stream_id in streams]
        assert len(mine) == total
        assert len({event.id for event in mine}) == total  # each exactly once
        positions = [event.position for event in events]
        assert positions == sorted(positions)
        assert positions == list(range(start, start + len(events)))  # dense: nothing skipped
        for s in streams:
            versions = [event.version for event in mine if event.stream_id == s]
            assert versions == list(range(1, per_writer + 1))


async def test_fifty_concurrent_appends_with_any_all_succeed(storage):
    s = stream()
    await asyncio.gather(*(storage.append(stream_id=s, expected=ANY, events=new(1)) for _ in range(50)))
    page = await storage.read_stream(stream_id=s, start=0, direction=Direction.FORWARD, limit=100)
    assert [event.version for event in page.events] == list(range(1, 51))
