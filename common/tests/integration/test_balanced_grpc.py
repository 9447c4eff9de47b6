"""A service channel over two real gRPC servers on loopback: calls go round-robin,
an instance whose health service says NOT_SERVING (it is draining) gets none, and
one that stops costs no call its answer."""

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health

from devstack.testing import eventually, free_port
from interchange_common.resilience import RetryBudget
from interchange_common.rpc import call_within, create_server, grpc_target, service_channel
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier

pytestmark = pytest.mark.integration
SECRET = "balanced-grpc-test-secret-" + uuid.uuid4().hex
WHO = "/test.Who/Port"


@dataclass
class Instance:
    port: int
    server: grpc.aio.Server
    health: health.aio.HealthServicer


async def start_instance() -> Instance:
    port = free_port()

    async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return str(port).encode()

    def register(server: grpc.aio.Server) -> None:
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(who)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Who", {"Port": handler}),))

    server, health_servicer = create_server(
        verifier=ServiceTokenVerifier(service="who", secret=SECRET), service_names=["test.Who"], register=register
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return Instance(port=port, server=server, health=health_servicer)


@pytest.fixture
async def instances() -> AsyncIterator[list[Instance]]:
    started = [await start_instance(), await start_instance()]
    yield started
    for instance in started:
        await instance.server.stop(grace=None)


@pytest.fixture
async def channel(instances) -> AsyncIterator[grpc.aio.Channel]:
    target = grpc_target(",".join(f"grpc://127.0.0.1:{instance.port}" for instance in instances))
    issuer = ServiceTokenIssuer(service="order-service", secret=SECRET, ttl_seconds=300)
    async with service_channel(target=target, issuer=issuer, audience="who") as balanced:
        yield balanced


async def answers(channel: grpc.aio.Channel, count: int) -> Counter[int]:
    who: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(WHO)
    budget = RetryBudget(name="who")
    ports = [
        int(await call_within(who, b"", deadline=2.0, retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}), budget=budget))
        for _ in range(count)
    ]
    return Counter(ports)


async def test_calls_go_round_robin_over_both(instances, channel):
    async def both_answer() -> bool:
        return len(await answers(channel, 10)) == 2

    await eventually(both_answer, timeout=10, what="both instances to take calls")


async def test_a_draining_instance_gets_no_more_calls(instances, channel):
    await answers(channel, 4)
    await instances[0].health.enter_graceful_shutdown()

    async def only_the_other() -> bool:
        return set(await answers(channel, 10)) == {instances[1].port}

    await eventually(only_the_other, timeout=10, what="calls to leave the draining instance")


async def test_a_stopped_instance_costs_no_call_its_answer(instances, channel):
    await answers(channel, 4)
    await instances[0].server.stop(grace=None)
    # Every call gets its answer (a call that meets the stopped one is retried: it
    # was not processed), from the instance left.
    seen = await answers(channel, 20)
    assert sum(seen.values()) == 20
    assert set(seen) <= {instances[0].port, instances[1].port}
    assert set(await answers(channel, 10)) == {instances[1].port}
