"""The per-method gRPC metrics of both ends, on a real server from create_server and
a service channel: each call counted once with the status it ended with (answered,
aborted, failed, refused, cut short by its deadline or its caller) and timed."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import REGISTRY

from devstack.testing import eventually, free_port
from interchange_common.rpc import create_server, service_channel
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier

pytestmark = pytest.mark.integration
SECRET = "grpc-metrics-test-secret-" + uuid.uuid4().hex
SERVICE = f"test.Metrics{uuid.uuid4().hex[:8]}"  # this run's own series
Context = grpc.aio.ServicerContext[bytes, bytes]


async def answer(request: bytes, context: Context) -> bytes:
    return b"yes"


async def missing(request: bytes, context: Context) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort returned")


async def broken(request: bytes, context: Context) -> bytes:
    raise RuntimeError("a bug")


entered_hang = asyncio.Event()


async def hang(request: bytes, context: Context) -> bytes:
    entered_hang.set()
    await asyncio.Event().wait()
    return b""


async def count(request: bytes, context: Context) -> AsyncIterator[bytes]:
    for n in range(3):
        yield str(n).encode()


async def endless(request: bytes, context: Context) -> AsyncIterator[bytes]:
    yield b"first"
    await asyncio.Event().wait()
    yield b"never"


def register(server: grpc.aio.Server) -> None:
    unary: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        name: grpc.unary_unary_rpc_method_handler(behaviour)
        for name, behaviour in (("Answer", answer), ("Missing", missing), ("Broken", broken), ("Hang", hang))
    }
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        **unary,
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Endless": grpc.unary_stream_rpc_method_handler(endless),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture(scope="module")
async def target() -> AsyncIterator[str]:
    port = free_port()
    server, _ = create_server(
        verifier=ServiceTokenVerifier(service="metrics", secret=SECRET), service_names=[SERVICE], register=register
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


@pytest.fixture
async def channel(target) -> AsyncIterator[grpc.aio.Channel]:
    issuer = ServiceTokenIssuer(service="order-service", secret=SECRET, ttl_seconds=300)
    async with service_channel(target=target, issuer=issuer, audience="metrics") as opened:
        yield opened


def handled(side: str, method: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value(f"grpc_{side}_handled_total", labels) or 0.0


def timed(side: str, method: str) -> tuple[float, float]:
    """How many calls of ``method`` were timed, and their total seconds."""
    labels = {"grpc_service": SERVICE, "grpc_method": method}
    return (
        REGISTRY.get_sample_value(f"grpc_{side}_handling_seconds_count", labels) or 0.0,
        REGISTRY.get_sample_value(f"grpc_{side}_handling_seconds_sum", labels) or 0.0,
    )


def unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(f"/{SERVICE}/{method}")


async def test_an_answered_call_is_counted_ok_and_timed_at_both_ends(channel):
    assert handled("server", "Answer", "OK") == 0
    assert await unary(channel, "Answer")(b"") == b"yes"
    assert await unary(channel, "Answer")(b"") == b"yes"
    for side in ("server", "client"):
        assert handled(side, "Answer", "OK") == 2
        calls, seconds = timed(side, "Answer")
        assert calls == 2
        assert 0 < seconds < 5


@pytest.mark.parametrize(
    ("method", "code"), [("Missing", "NOT_FOUND"), ("Broken", "UNKNOWN")], ids=["aborted", "raised"]
)
async def test_a_failed_call_is_counted_with_the_status_it_was_answered(channel, method, code):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await unary(channel, method)(b"")
    assert raised.value.code().name == code
    assert handled("server", method, code) == 1
    assert handled("client", method, code) == 1
    assert handled("server", method, "OK") == handled("client", method, "OK") == 0


async def test_a_call_without_a_valid_token_is_counted_unauthenticated(target):
    forger = ServiceTokenIssuer(service="order-service", secret="another-secret-" + "x" * 32, ttl_seconds=300)
    async with service_channel(target=target, issuer=forger, audience="metrics") as forged:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await unary(forged, "Answer")(b"")
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert handled("server", "Answer", "UNAUTHENTICATED") == 1
    assert handled("client", "Answer", "UNAUTHENTICATED") == 1


async def test_a_call_past_its_deadline_is_counted_deadline_exceeded_and_timed_to_it(channel):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await unary(channel, "Hang")(b"", timeout=0.3)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert handled("client", "Hang", "DEADLINE_EXCEEDED") == 1
    assert timed("client", "Hang")[1] >= 0.3

    async def counted_by_the_server() -> bool:
        return handled("server", "Hang", "DEADLINE_EXCEEDED") == 1

    await eventually(counted_by_the_server, timeout=5, what="the server to count the call")


async def test_a_call_its_caller_cancels_is_counted_cancelled_at_both_ends(channel):
    entered_hang.clear()
    call = unary(channel, "Hang")(b"")
    await asyncio.wait_for(entered_hang.wait(), timeout=5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert handled("client", "Hang", "CANCELLED") == 1

    async def counted_by_the_server() -> bool:
        return handled("server", "Hang", "CANCELLED") == 1

    await eventually(counted_by_the_server, timeout=5, what="the server to count the cancelled call")


async def test_a_stream_is_counted_when_it_ends(channel):
    responses = [response async for response in channel.unary_stream(f"/{SERVICE}/Count")(b"")]
    assert responses == [b"0", b"1", b"2"]

    async def counted() -> bool:
        return handled("server", "Count", "OK") == handled("client", "Count", "OK") == 1

    await eventually(counted, timeout=5, what="both ends to count the stream")
    assert timed("client", "Count")[0] == 1


async def test_a_stream_its_caller_cancels_is_counted_cancelled_at_both_ends(channel):
    call = channel.unary_stream(f"/{SERVICE}/Endless")(b"")
    assert await anext(aiter(call)) == b"first"
    call.cancel()

    async def counted() -> bool:
        return handled("server", "Endless", "CANCELLED") == 1 and handled("client", "Endless", "CANCELLED") == 1

    await eventually(counted, timeout=5, what="both ends to count the cancelled stream")
    assert handled("server", "Endless", "UNKNOWN") == handled("client", "Endless", "UNKNOWN") == 0
