"""The use cases on the in-memory backend: validation, and subscriptions."""

import asyncio
import uuid

import pytest

from event_store.adapters.memory import InMemoryEventStorage
from event_store.domain.errors import InvalidAppend, InvalidRead
from event_store.domain.model import Direction, ExpectedVersion, NewEvent
from event_store.domain.store import EventStore


def new(n: int = 1, type_: str = "order.created") -> list[NewEvent]:
    return [NewEvent(uuid.uuid4(), type_, {"i": i}, {}) for i in range(n)]


@pytest.fixture
def store() -> EventStore:
    return EventStore(storage=InMemoryEventStorage())


async def test_bad_input_writes_nothing(store):
    with pytest.raises(InvalidAppend):
        await store.append(stream_id="", expected=ExpectedVersion.parse("any"), events=new())
    with pytest.raises(InvalidAppend):
        await store.append(stream_id="s-1", expected=ExpectedVersion.parse("any"), events=[])
    assert (await store.read_all(start=0, limit=10)).events == []


@pytest.mark.parametrize(("start", "limit"), [(-1, 10), (0, -1)])
async def test_bad_reads_are_refused(store, start, limit):
    with pytest.raises(InvalidRead):
        await store.read_all(start=start, limit=limit)


async def test_snapshots_must_point_at_a_recorded_version(store):
    await store.append(stream_id="s-1", expected=ExpectedVersion.parse("any"), events=new(2))
    with pytest.raises(InvalidAppend):
        await store.save_snapshot(stream_id="s-1", version=3, data={})
    with pytest.raises(InvalidAppend):
        await store.save_snapshot(stream_id="s-1", version=2, data=["not", "an", "object"])
    kept = await store.save_snapshot(stream_id="s-1", version=2, data={"total": 2})
    assert (await store.load_snapshot(stream_id="s-1")).version == kept.version == 2


async def test_a_subscription_catches_up_then_follows_live(store):
    await store.append(stream_id="s-1", expected=ExpectedVersion.parse("any"), events=new(3))
    received = []

    async def follow():
        async for event in store.subscribe(stream_id="s-1", start=2):
            received.append(event.version)
            if len(received) == 4:
                return

    follower = asyncio.create_task(follow())
    await store.append(stream_id="s-1", expected=ExpectedVersion.parse(3), events=new(2))
    await asyncio.wait_for(follower, timeout=2)
    assert received == [2, 3, 4, 5]


async def test_a_subscription_to_all_follows_every_stream_in_order(store):
    received = []

    async def follow():
        async for event in store.subscribe(stream_id=None, start=0):
            received.append((event.stream_id, event.position))
            if len(received) == 3:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    for stream in ("a-1", "b-1", "a-1"):
        await store.append(stream_id=stream, expected=ExpectedVersion.parse("any"), events=new())
    await asyncio.wait_for(follower, timeout=2)
    assert received == [("a-1", 1), ("b-1", 2), ("a-1", 3)]


async def test_backward_reads_page_from_the_end(store):
    await store.append(stream_id="s-1", expected=ExpectedVersion.parse("any"), events=new(5))
    page = await store.read_stream(stream_id="s-1", start=0, direction=Direction.BACKWARD, limit=2)
    assert [event.version for event in page.events] == [5, 4]
    rest = await store.read_stream(stream_id="s-1", start=page.next, direction=Direction.BACKWARD, limit=10)
    assert [event.version for event in rest.events] == [3, 2, 1]
    assert rest.end
