"""Recipients looked up in a real user-service process over gRPC."""

import uuid
from pathlib import Path

import pytest

from devstack.compose import read_env_file
from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.rpc import service_channel
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.users import UserServiceClient
from notification_service.adapters.errors import UserDirectoryUnavailable
from notification_service.adapters.users import GrpcUserDirectory

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def channel(user_service_grpc):
    secret = read_env_file(ROOT / ".env.example")["SERVICE_JWT_SECRET"]
    issuer = ServiceTokenIssuer(service="notification-service", secret=secret, ttl_seconds=600)
    channel = service_channel(target=user_service_grpc, issuer=issuer, audience="user-service")
    yield channel
    await channel.close()


async def test_a_user_is_found_with_their_address_and_time(channel):
    email = f"lookup-{uuid.uuid4().hex[:10]}@example.com"
    created = await user_pb2_grpc.UserServiceStub(channel).CreateUser(
        user_pb2.CreateUserRequest(name="Grace Hopper", email=email), timeout=5
    )
    found = await GrpcUserDirectory(users=UserServiceClient(channel=channel)).lookup(user_id=uuid.UUID(created.id))
    assert found is not None
    assert (found.email, found.name, found.deleted) == (email, "Grace Hopper", False)
    assert found.as_of == created.updated_at.ToDatetime(tzinfo=found.as_of.tzinfo)


async def test_an_unknown_user_is_none(channel):
    assert await GrpcUserDirectory(users=UserServiceClient(channel=channel)).lookup(user_id=uuid.uuid4()) is None


async def test_an_unreachable_user_service_is_unavailable_within_the_deadline():
    secret = read_env_file(ROOT / ".env.example")["SERVICE_JWT_SECRET"]
    issuer = ServiceTokenIssuer(service="notification-service", secret=secret, ttl_seconds=600)
    dead = service_channel(target="127.0.0.1:1", issuer=issuer, audience="user-service")
    try:
        with pytest.raises(UserDirectoryUnavailable):
            await GrpcUserDirectory(users=UserServiceClient(channel=dead, deadline_seconds=0.5)).lookup(
                user_id=uuid.uuid4()
            )
    finally:
        await dead.close()
