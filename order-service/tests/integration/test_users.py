"""The user directory against a real user-service process: each status as
user-service has it, an unknown user, and a user-service that does not answer.
(Retries and the breaker are the shared client's: common/tests/integration/test_users.py.)"""

import uuid

import pytest

from devstack.testing import free_port
from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.errors import UserServiceUnavailable
from interchange_common.rpc import service_channel
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.users import UserServiceClient
from order_service.adapters.users import GrpcUserDirectory
from order_service.domain.errors import UserCheckUnavailable
from order_service.domain.ports import UserStatus

pytestmark = pytest.mark.integration


def channel_to(target, secret):
    issuer = ServiceTokenIssuer(service="order-service", secret=secret, ttl_seconds=600)
    return service_channel(target=target, issuer=issuer, audience="user-service")


async def test_each_users_status_is_as_user_service_has_it_and_an_unknown_user_is_none(user_service_grpc, secret):
    async with channel_to(user_service_grpc, secret) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        directory = GrpcUserDirectory(users=UserServiceClient(channel=channel))
        for status in (user_pb2.ACTIVE, user_pb2.INACTIVE, user_pb2.SUSPENDED):
            created = await stub.CreateUser(
                user_pb2.CreateUserRequest(name="A", email=f"a-{uuid.uuid4().hex[:8]}@example.com")
            )
            if status != user_pb2.ACTIVE:
                await stub.UpdateUser(user_pb2.UpdateUserRequest(id=created.id, status=status))
            expected = UserStatus[user_pb2.UserStatus.Name(status)]
            assert await directory.status(user_id=uuid.UUID(created.id)) is expected
        assert await directory.status(user_id=uuid.uuid4()) is None


async def test_an_unreachable_user_service_is_user_check_unavailable():
    async with channel_to(f"127.0.0.1:{free_port()}", "unused-secret-" + "x" * 32) as channel:
        directory = GrpcUserDirectory(users=UserServiceClient(channel=channel, deadline_seconds=0.5))
        with pytest.raises(UserCheckUnavailable) as failed:
            await directory.status(user_id=uuid.uuid4())
    assert str(failed.value) == "user-service: UNAVAILABLE"  # the words the HTTP answer carries
    assert isinstance(failed.value.__cause__, UserServiceUnavailable)
