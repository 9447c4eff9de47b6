"""UserServiceClient against a real user-service process (run natively on free
ports, alone with its own database): answers, retries, the breaker, and how each
outcome is named."""

import uuid
from pathlib import Path

import grpc
import pytest

from devstack.compose import read_env_file
from devstack.testing import free_port
from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.errors import UserNotFound, UserServiceUnavailable
from interchange_common.resilience import BreakerState, CircuitBreaker, CircuitOpen
from interchange_common.rpc import service_interceptors
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.users import UserServiceClient

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
SECRET = read_env_file(ROOT / ".env.example")["SERVICE_JWT_SECRET"]


class Counting(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.calls = 0

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        self.calls += 1
        return await continuation(client_call_details, request)


def channel_to(target, counter):
    issuer = ServiceTokenIssuer(service="order-service", secret=SECRET, ttl_seconds=600)
    return grpc.aio.insecure_channel(
        target, interceptors=[counter, *service_interceptors(issuer=issuer, audience="user-service")]
    )


async def test_a_user_is_answered_and_an_unknown_one_is_not_found_without_retries_or_breaker_trips(
    user_service_grpc,
):
    counter = Counting()
    async with channel_to(user_service_grpc, counter) as channel:
        email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
        created = await user_pb2_grpc.UserServiceStub(channel).CreateUser(
            user_pb2.CreateUserRequest(name="Ada", email=email)
        )
        breaker = CircuitBreaker(name="users-a", failures_to_open=2)
        users = UserServiceClient(channel=channel, breaker=breaker)
        found = await users.get_user(user_id=uuid.UUID(created.id))
        assert (found.id, found.email, found.status) == (created.id, email, user_pb2.ACTIVE)
        before = counter.calls
        for _ in range(5):  # answers, not failures: no retries, and the breaker stays closed
            with pytest.raises(UserNotFound):
                await users.get_user(user_id=uuid.uuid4())
        assert counter.calls == before + 5
        assert breaker.state is BreakerState.CLOSED
        assert (await users.get_user(user_id=uuid.UUID(created.id))).id == created.id


async def test_an_unreachable_user_service_is_retried_then_the_breaker_fails_fast():
    counter = Counting()
    async with channel_to(f"127.0.0.1:{free_port()}", counter) as channel:
        breaker = CircuitBreaker(name="users-b", failures_to_open=2)
        users = UserServiceClient(channel=channel, breaker=breaker, deadline_seconds=0.5, attempts=3)
        for _ in range(2):
            with pytest.raises(UserServiceUnavailable) as failed:
                await users.get_user(user_id=uuid.uuid4())
            assert str(failed.value) == "user-service: UNAVAILABLE"
            assert isinstance(failed.value.__cause__, grpc.aio.AioRpcError)
        assert counter.calls == 2 * 3  # UNAVAILABLE: the call was not processed, so it was retried
        with pytest.raises(UserServiceUnavailable) as refused:
            await users.get_user(user_id=uuid.uuid4())
        assert str(refused.value) == "user-service is failing; not asked again yet"
        assert isinstance(refused.value.__cause__, CircuitOpen)
        assert counter.calls == 6  # open: nothing was sent
