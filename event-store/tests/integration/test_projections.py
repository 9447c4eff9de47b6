"""ProjectionRunner fed by the real event-store over gRPC, writing a read model in
its own PostgreSQL database: exactly once, through crashes, concurrent runners
and rebuilds, the events that have come applied together in one transaction."""

import asyncio
import uuid
from collections.abc import AsyncGenerator

import pytest
from google.protobuf.empty_pb2 import Empty
from sqlalchemy import Column, Integer, MetaData, Table, Text, delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import throwaway_database
from interchange_common.contracts import eventstore_pb2 as pb
from interchange_common.contracts import eventstore_pb2_grpc as pb_grpc
from interchange_common.events import RecordedEvent
from interchange_common.projections import MAX_BATCH, GrpcEventSource, ProjectionRunner
from interchange_common.projections import metadata as projection_metadata
from interchange_common.rpc import service_channel
from interchange_common.tasks import background

pytestmark = pytest.mark.integration

read_model = MetaData()
counts = Table(
    "stream_counts",
    read_model,
    Column("stream_id", Text, primary_key=True),
    Column("events", Integer, nullable=False),
)


async def count_events(conn, events):
    for event in events:
        await conn.execute(
            insert(counts)
            .values(stream_id=event.stream_id, events=1)
            .on_conflict_do_update(index_elements=["stream_id"], set_={"events": counts.c.events + 1})
        )


@pytest.fixture(scope="module")
async def engine(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_projection") as url:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(projection_metadata.create_all)
            await conn.run_sync(read_model.create_all)
        yield engine
        await engine.dispose()


@pytest.fixture(scope="module")
async def channel(service, issuer):
    channel = service_channel(target=f"127.0.0.1:{service.grpc_port}", issuer=issuer, audience="event-store")
    yield channel
    await channel.close()


async def append(channel, stream, n):
    stub = pb_grpc.EventStoreStub(channel)
    events = [pb.NewEvent(id=str(uuid.uuid4()), type="thing.happened", data=b"{}") for _ in range(n)]
    anywhere = pb.ExpectedVersion(any=Empty())
    await stub.Append(pb.AppendRequest(stream_id=stream, expected_version=anywhere, events=events))


async def counts_of(engine, streams):
    async with engine.connect() as conn:
        rows = (await conn.execute(select(counts).where(counts.c.stream_id.in_(streams)))).all()
    return {row.stream_id: row.events for row in rows}


async def until_counts(engine, streams, expected, *, timeout=20):
    async with asyncio.timeout(timeout):
        while (found := await counts_of(engine, streams)) != expected:
            await asyncio.sleep(0.05)
    return found


def running(*runners):
    return background(*(runner.run() for runner in runners))


def runner(engine, channel, name, handler=count_events, *, source=None, max_batch=MAX_BATCH):
    return ProjectionRunner(
        name=name,
        engine=engine,
        source=source or GrpcEventSource(channel=channel),
        handler=handler,
        max_batch=max_batch,
    )


class HeldBack:
    """The real subscription, its events held back until the one of ``stream`` at
    ``version`` has come, then handed over at once: the runner finds them all waiting.
    Later events pass as they come."""

    def __init__(self, channel, *, stream: str, version: int) -> None:
        self._inner = GrpcEventSource(channel=channel)
        self._stream = stream
        self._version = version

    async def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        held: list[RecordedEvent] | None = []
        async for event in self._inner.subscribe(start=start):
            if held is None:
                yield event
                continue
            held.append(event)
            if (event.stream_id, event.version) == (self._stream, self._version):
                for waiting in held:
                    yield waiting
                held = None


ALL_AT_ONCE = 1_000_000  # a batch as large as the whole store: whatever has come is one batch


async def test_every_event_is_applied_once_and_the_checkpoint_follows(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    streams = [f"p-{uuid.uuid4()}" for _ in range(3)]
    for stream, n in zip(streams, (3, 1, 2), strict=True):
        await append(channel, stream, n)
    projection = runner(engine, channel, name)
    async with running(projection):
        await until_counts(engine, streams, dict(zip(streams, (3, 1, 2), strict=True)))
        await append(channel, streams[1], 4)  # live, after catching up
        await until_counts(engine, streams, dict(zip(streams, (3, 5, 2), strict=True)))
    assert await projection.position() > 0


async def test_the_events_that_have_come_are_applied_in_one_transaction(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    stream = f"p-{uuid.uuid4()}"
    await append(channel, stream, 20)
    transactions: list[tuple[int, list[str]]] = []

    async def count_and_note(conn, events):
        transactions.append((await conn.scalar(text("SELECT txid_current()")), [e.stream_id for e in events]))
        await count_events(conn, events)

    source = HeldBack(channel, stream=stream, version=20)
    async with running(runner(engine, channel, name, count_and_note, source=source, max_batch=ALL_AT_ONCE)):
        await until_counts(engine, [stream], {stream: 20})
    ours = [txid for txid, streams in transactions if stream in streams]
    assert len(ours) == 1  # one transaction, one checkpoint lock and update, for the twenty
    assert transactions[0][1].count(stream) == 20


async def test_a_batch_holds_at_most_max_batch_events(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    stream = f"p-{uuid.uuid4()}"
    await append(channel, stream, 7)
    sizes: list[int] = []

    async def count_and_measure(conn, events):
        sizes.append(len(events))
        await count_events(conn, events)

    source = HeldBack(channel, stream=stream, version=7)
    async with running(runner(engine, channel, name, count_and_measure, source=source, max_batch=3)):
        await until_counts(engine, [stream], {stream: 7})
    assert max(sizes) == 3


async def test_a_crash_mid_batch_leaves_nothing_of_the_batch_and_the_next_run_applies_it_once(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    stream = f"p-{uuid.uuid4()}"
    await append(channel, stream, 5)
    failed_once: set[str] = set()

    async def flaky(conn, events):
        for event in events:
            await count_events(conn, [event])
            if event.stream_id == stream and event.version == 3 and "done" not in failed_once:
                failed_once.add("done")
                # Not the event's fault (a lost connection): no retry, no parking.
                raise ConnectionResetError("the handler crashed after writing")

    def held():
        return HeldBack(channel, stream=stream, version=5)

    with pytest.raises(ConnectionResetError, match="crashed"):
        await runner(engine, channel, name, flaky, source=held(), max_batch=ALL_AT_ONCE).run()
    # Events 1 and 2 were written in the batch, and rolled back with it and its checkpoint.
    assert await counts_of(engine, [stream]) == {}
    projection = runner(engine, channel, name, flaky, source=held(), max_batch=ALL_AT_ONCE)
    assert await projection.position() == 0
    async with running(projection):
        await until_counts(engine, [stream], {stream: 5})
    assert await counts_of(engine, [stream]) == {stream: 5}


async def test_a_run_that_should_stop_after_n_events_applies_n(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    stream = f"p-{uuid.uuid4()}"
    await append(channel, stream, 5)
    projection = runner(engine, channel, name, source=HeldBack(channel, stream=stream, version=5))
    assert await projection.run(stop_after=3) == 3
    assert await projection.position() == 3
    assert await projection.run(stop_after=2) == 2
    assert await projection.position() == 5


async def test_two_runners_of_one_projection_apply_each_event_once(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    streams = [f"p-{uuid.uuid4()}" for _ in range(4)]
    for stream in streams:
        await append(channel, stream, 25)
    runners = [runner(engine, channel, name) for _ in range(2)]
    async with running(*runners):
        await until_counts(engine, streams, dict.fromkeys(streams, 25))
        applied_up_to = await runners[0].position()
        async with asyncio.timeout(20):
            while min(each.handled_up_to for each in runners) < applied_up_to:
                await asyncio.sleep(0.05)
        # Both runners went over every event; each was applied once.
        assert await counts_of(engine, streams) == dict.fromkeys(streams, 25)


async def test_when_one_of_two_runners_stops_the_other_applies_what_comes(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    stream = f"p-{uuid.uuid4()}"
    await append(channel, stream, 10)
    staying = runner(engine, channel, name)
    async with running(staying):
        async with running(runner(engine, channel, name)):
            await until_counts(engine, [stream], {stream: 10})
        # Whichever of the two was applying, and whichever merely went over the events
        # now and then: the one left applies the next ones, once each.
        await append(channel, stream, 10)
        await until_counts(engine, [stream], {stream: 20})


async def test_a_rebuild_replays_from_the_start(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    stream = f"p-{uuid.uuid4()}"
    await append(channel, stream, 3)
    projection = runner(engine, channel, name)
    async with running(projection):
        await until_counts(engine, [stream], {stream: 3})

    async def reset(conn):
        await conn.execute(delete(counts))

    await projection.rebuild(reset=reset)
    assert await projection.position() == 0
    assert await counts_of(engine, [stream]) == {}
    async with running(projection):
        await until_counts(engine, [stream], {stream: 3})
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM projection_checkpoints WHERE name = :n"), {"n": name}) == 1


async def test_a_rebuild_while_running_replays_everything(engine, channel):
    name = f"counts-{uuid.uuid4().hex[:6]}"
    stream = f"p-{uuid.uuid4()}"
    await append(channel, stream, 5)
    projection = runner(engine, channel, name)

    async def reset(conn):
        await conn.execute(delete(counts).where(counts.c.stream_id == stream))

    async with running(projection):
        await until_counts(engine, [stream], {stream: 5})
        await projection.rebuild(reset=reset)  # the runner is mid-stream, past these events
        await append(channel, stream, 5)
        await until_counts(engine, [stream], {stream: 10})
