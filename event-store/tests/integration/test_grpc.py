"""event-store's gRPC API, served by the real process."""

import asyncio
import uuid

import grpc
import orjson
import pytest
from google.protobuf.empty_pb2 import Empty

from devstack.testing import undecodable_call
from interchange_common.contracts import eventstore_pb2 as pb
from interchange_common.contracts import eventstore_pb2_grpc as pb_grpc
from interchange_common.rpc import service_channel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stub(service, issuer):
    channel = service_channel(target=f"127.0.0.1:{service.grpc_port}", issuer=issuer, audience="event-store")
    yield pb_grpc.EventStoreStub(channel)
    await channel.close()


def new(n=1):
    return [pb.NewEvent(id=str(uuid.uuid4()), type="order.created", data=orjson.dumps({"i": i})) for i in range(n)]


def any_version():
    return pb.ExpectedVersion(any=Empty())


async def test_append_read_and_conflict(stub):
    s = f"order-{uuid.uuid4()}"
    reply = await stub.Append(
        pb.AppendRequest(stream_id=s, expected_version=pb.ExpectedVersion(no_stream=Empty()), events=new(3))
    )
    assert (reply.first_version, reply.last_version) == (1, 3)
    page = await stub.ReadStream(pb.ReadStreamRequest(stream_id=s, direction=pb.BACKWARD, limit=2))
    assert [e.version for e in page.events] == [3, 2]
    assert orjson.loads(page.events[0].data) == {"i": 2}
    call = stub.Append(pb.AppendRequest(stream_id=s, expected_version=pb.ExpectedVersion(exact=1), events=new()))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(await call.trailing_metadata())["actual-version"] == "3"


@pytest.mark.parametrize(
    "request_message",
    [
        pb.AppendRequest(stream_id="s-1", events=new()),  # no expected version
        pb.AppendRequest(stream_id="", expected_version=any_version(), events=new()),
        pb.AppendRequest(stream_id="s-1", expected_version=any_version(), events=[]),
        pb.AppendRequest(
            stream_id="s-1", expected_version=any_version(), events=[pb.NewEvent(id="nope", type="a.b", data=b"{}")]
        ),
        pb.AppendRequest(
            stream_id="s-1",
            expected_version=any_version(),
            events=[pb.NewEvent(id=str(uuid.uuid4()), type="a.b", data=b"{not json")],
        ),
        pb.AppendRequest(
            stream_id="s-1",
            expected_version=any_version(),
            events=[pb.NewEvent(id=str(uuid.uuid4()), type="a.b", data=b"[1]")],
        ),
    ],
    ids=["no-expectation", "empty-stream", "empty-batch", "bad-id", "invalid-json", "not-an-object"],
)
async def test_bad_appends_are_invalid_argument(stub, request_message):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Append(request_message)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_positions_beyond_any_event_are_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ReadAll(pb.ReadAllRequest(from_position=2**64 - 1))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_subscribe_catches_up_then_goes_live(stub):
    s = f"order-{uuid.uuid4()}"
    await stub.Append(pb.AppendRequest(stream_id=s, expected_version=any_version(), events=new(2)))
    received = []

    async def follow():
        async for event in stub.Subscribe(pb.SubscribeRequest(stream_id=s, start=1)):
            received.append(event.version)
            if len(received) == 4:
                return

    follower = asyncio.create_task(follow())
    await stub.Append(pb.AppendRequest(stream_id=s, expected_version=pb.ExpectedVersion(exact=2), events=new(2)))
    await asyncio.wait_for(follower, timeout=10)
    assert received == [1, 2, 3, 4]


async def test_subscribe_to_all_gets_positions_in_order(stub):
    s = f"order-{uuid.uuid4()}"
    start = (await stub.ReadAll(pb.ReadAllRequest(from_position=0, limit=1))).next
    while True:
        page = await stub.ReadAll(pb.ReadAllRequest(from_position=start, limit=1000))
        start = page.next
        if page.end:
            break
    await stub.Append(pb.AppendRequest(stream_id=s, expected_version=any_version(), events=new(3)))
    positions = []
    async for event in stub.Subscribe(pb.SubscribeRequest(start=start)):
        positions.append(event.position)
        if len(positions) == 3:
            break
    assert positions == [start, start + 1, start + 2]


async def test_snapshots_round_trip(stub):
    s = f"order-{uuid.uuid4()}"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=s))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.Append(pb.AppendRequest(stream_id=s, expected_version=any_version(), events=new(2)))
    await stub.SaveSnapshot(pb.SaveSnapshotRequest(stream_id=s, version=2, data=b'{"total": 2}'))
    loaded = await stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=s))
    assert (loaded.version, orjson.loads(loaded.data)) == (2, {"total": 2})


async def test_calls_without_a_service_token_are_unauthenticated(service):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await pb_grpc.EventStoreStub(channel).ReadAll(pb.ReadAllRequest())
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


RAW_METHODS = [("unary_unary", "/eventstore.EventStore/ReadAll"), ("unary_stream", "/eventstore.EventStore/Subscribe")]


@pytest.mark.parametrize(("kind", "method"), RAW_METHODS, ids=["ReadAll", "Subscribe"])
async def test_undecodable_bytes_without_a_token_are_unauthenticated(service, kind, method):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        error = await undecodable_call(channel, kind=kind, method=method)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "service token required"


@pytest.mark.parametrize(("kind", "method"), RAW_METHODS, ids=["ReadAll", "Subscribe"])
async def test_undecodable_bytes_with_a_token_are_invalid_argument_without_internals(
    service, service_token, kind, method
):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        metadata = [("authorization", f"Bearer {service_token}")]
        error = await undecodable_call(channel, kind=kind, method=method, metadata=metadata)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "request could not be decoded"
    assert not any(word in (error.details() or "") for word in ("Unexpected", "DecodeError", "class"))
