"""The user check against a real user-service process: answers, retries, breaker."""

import uuid

import grpc
import pytest

from devstack.testing import free_port
from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.resilience import CircuitBreaker, CircuitOpen
from interchange_common.rpc import service_interceptors
from interchange_common.servicejwt import ServiceTokenIssuer
from order_service.adapters.users import UserCheckUnavailable, UserDirectory, UserMayNotOrder

pytestmark = pytest.mark.integration


class Counting(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.calls = 0

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        self.calls += 1
        return await continuation(client_call_details, request)


def channel_to(target, secret, counter):
    issuer = ServiceTokenIssuer(service="order-service", secret=secret, ttl_seconds=600)
    return grpc.aio.insecure_channel(
        target, interceptors=[counter, *service_interceptors(issuer=issuer, audience="user-service")]
    )


async def test_active_users_may_order_and_unknown_or_suspended_ones_may_not(user_service, secret):
    counter = Counting()
    async with channel_to(user_service, secret, counter) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        active = await stub.CreateUser(
            user_pb2.CreateUserRequest(name="A", email=f"a-{uuid.uuid4().hex[:8]}@example.com")
        )
        suspended = await stub.CreateUser(
            user_pb2.CreateUserRequest(name="S", email=f"s-{uuid.uuid4().hex[:8]}@example.com")
        )
        await stub.UpdateUser(user_pb2.UpdateUserRequest(id=suspended.id, status=user_pb2.SUSPENDED))
        directory = UserDirectory(channel=channel, breaker=CircuitBreaker(name="users-a", failures_to_open=2))
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
        breaker = CircuitBreaker(name="users-b", failures_to_open=2)
        directory = UserDirectory(channel=channel, breaker=breaker, deadline_seconds=0.5, attempts=3)
        for _ in range(2):
            with pytest.raises(UserCheckUnavailable) as failed:
                await directory.ensure_may_order(user_id=uuid.uuid4())
            assert isinstance(failed.value.__cause__, grpc.aio.AioRpcError)
        assert counter.calls == 2 * 3  # UNAVAILABLE: the call was not processed, so it was retried
        with pytest.raises(UserCheckUnavailable) as refused:
            await directory.ensure_may_order(user_id=uuid.uuid4())
        assert isinstance(refused.value.__cause__, CircuitOpen)
        assert counter.calls == 6  # open: nothing was sent
