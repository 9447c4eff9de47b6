"""The user check against a real user-service process: answers, retries, breaker."""

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest
from purgatory.domain.model import OpenedState

from devstack.compose import read_env_file
from devstack.stack import Stack
from devstack.testing import delete_exchange, free_port, isolated_stack_options, run_id
from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.rpc import service_interceptors
from interchange_common.servicejwt import ServiceTokenIssuer
from order_service.adapters.users import UserCheckUnavailable, UserDirectory, UserMayNotOrder

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


class Counting(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.calls = 0

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        self.calls += 1
        return await continuation(client_call_details, request)


@pytest.fixture(scope="module")
def user_service(infra, tmp_path_factory):
    run = run_id()
    exchange = f"ic-it-ordusers-{run}.events"
    stack = Stack.prepare(
        options=isolated_stack_options(
            root=ROOT,
            run=run,
            purpose="it_ordusers",
            log_dir=tmp_path_factory.mktemp("user-service"),
            only=frozenset({"user-service"}),
            env_overrides={"user-service": {"EVENTS_EXCHANGE": exchange}},
        ),
        infra=infra,
    )
    stack.start(health_timeout=60)
    try:
        secret = read_env_file(ROOT / ".env.example")["SERVICE_JWT_SECRET"]
        yield f"127.0.0.1:{stack.port('user-service', 50051)}", secret
    finally:
        stack.stop(drop_databases_too=True)
        asyncio.run(delete_exchange(amqp_url=infra.rabbitmq_url, exchange=exchange))


def channel_to(target, secret, counter):
    issuer = ServiceTokenIssuer(service="order-service", secret=secret, ttl_seconds=600)
    return grpc.aio.insecure_channel(
        target, interceptors=[counter, *service_interceptors(issuer=issuer, audience="user-service")]
    )


async def test_active_users_may_order_and_unknown_or_suspended_ones_may_not(user_service):
    target, secret = user_service
    counter = Counting()
    async with channel_to(target, secret, counter) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        active = await stub.CreateUser(
            user_pb2.CreateUserRequest(name="A", email=f"a-{uuid.uuid4().hex[:8]}@example.com")
        )
        suspended = await stub.CreateUser(
            user_pb2.CreateUserRequest(name="S", email=f"s-{uuid.uuid4().hex[:8]}@example.com")
        )
        await stub.UpdateUser(user_pb2.UpdateUserRequest(id=suspended.id, status=user_pb2.SUSPENDED))
        directory = UserDirectory(channel=channel, failures_to_open=2)
        await directory.ensure_may_order(user_id=uuid.UUID(active.id))
        with pytest.raises(UserMayNotOrder):
            await directory.ensure_may_order(user_id=uuid.UUID(suspended.id))
        before = counter.calls
        for _ in range(5):  # answers, not failures: no retries, and the breaker stays closed
            with pytest.raises(UserMayNotOrder):
                await directory.ensure_may_order(user_id=uuid.uuid4())
        assert counter.calls == before + 5
        await directory.ensure_may_order(user_id=uuid.UUID(active.id))


async def test_an_unreachable_user_service_is_retried_then_the_breaker_fails_fast():
    counter = Counting()
    async with channel_to(f"127.0.0.1:{free_port()}", "unused-secret-" + "x" * 32, counter) as channel:
        directory = UserDirectory(channel=channel, deadline_seconds=0.5, failures_to_open=2, attempts=3)
        for _ in range(2):
            with pytest.raises(UserCheckUnavailable) as failed:
                await directory.ensure_may_order(user_id=uuid.uuid4())
            assert isinstance(failed.value.__cause__, grpc.aio.AioRpcError)
        assert counter.calls == 2 * 3  # UNAVAILABLE: the call was not processed, so it was retried
        with pytest.raises(UserCheckUnavailable) as refused:
            await directory.ensure_may_order(user_id=uuid.uuid4())
        assert isinstance(refused.value.__cause__, OpenedState)
        assert counter.calls == 6  # open: nothing was sent
