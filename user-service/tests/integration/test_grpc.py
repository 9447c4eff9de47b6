"""gRPC user.UserService on a real port, against a real PostgreSQL."""

import contextlib
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import free_port, undecodable_call
from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.rpc import create_server, mark_serving, service_channel
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from user_service.adapters.passwords import Argon2PasswordHasher
from user_service.adapters.repository import SqlUserRepository
from user_service.domain.usecases import Users
from user_service.entrypoints.grpc_server import SERVICE_NAME, UserServicer

pytestmark = pytest.mark.integration
SECRET = "integration-secret-" + "x" * 32


@contextlib.asynccontextmanager
async def serving(users):
    """The gRPC server over ``users`` on a free port: its address."""
    port = free_port()
    server, health = create_server(
        verifier=ServiceTokenVerifier(service="user-service", secret=SECRET),
        service_names=[SERVICE_NAME],
        register=lambda s: user_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(users=users), s),
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await mark_serving(health_servicer=health, service_names=[SERVICE_NAME])
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@contextlib.asynccontextmanager
async def stub_of(address):
    issuer = ServiceTokenIssuer(service="order-service", secret=SECRET, ttl_seconds=300)
    channel = service_channel(target=address, issuer=issuer, audience="user-service")
    try:
        yield user_pb2_grpc.UserServiceStub(channel)
    finally:
        await channel.close()


@pytest.fixture(scope="module")
async def address(users):
    async with serving(users) as address:
        yield address


@pytest.fixture(scope="module")
async def stub(address):
    async with stub_of(address) as stub:
        yield stub


def email():
    return f"grpc-{uuid.uuid4().hex[:10]}@example.com"


async def test_create_get_update_delete(stub):
    created = await stub.CreateUser(user_pb2.CreateUserRequest(name="Ada", email=email(), password="long enough"))
    assert created.status == user_pb2.ACTIVE
    assert list(created.roles) == ["user"]
    assert created.created_at.seconds > 0
    fetched = await stub.GetUser(user_pb2.GetUserRequest(id=created.id))
    assert fetched == created
    updated = await stub.UpdateUser(user_pb2.UpdateUserRequest(id=created.id, name="Ada L.", status=user_pb2.INACTIVE))
    assert (updated.name, updated.email, updated.status) == ("Ada L.", created.email, user_pb2.INACTIVE)
    deleted = await stub.DeleteUser(user_pb2.DeleteUserRequest(id=created.id))
    assert deleted.success
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetUser(user_pb2.GetUserRequest(id=created.id))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_roles_are_replaced_only_when_asked(stub):
    created = await stub.CreateUser(user_pb2.CreateUserRequest(name="Ada", email=email(), roles=["user", "admin"]))
    kept = await stub.UpdateUser(user_pb2.UpdateUserRequest(id=created.id, name="Still Ada"))
    assert sorted(kept.roles) == ["admin", "user"]
    cleared = await stub.UpdateUser(user_pb2.UpdateUserRequest(id=created.id, replace_roles=True))
    assert list(cleared.roles) == []


@pytest.mark.parametrize(
    ("call", "request_message", "code"),
    [
        ("GetUser", user_pb2.GetUserRequest(id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND),
        ("GetUser", user_pb2.GetUserRequest(id="not-a-uuid"), grpc.StatusCode.NOT_FOUND),
        ("CreateUser", user_pb2.CreateUserRequest(name="", email="a@example.com"), grpc.StatusCode.INVALID_ARGUMENT),
        ("CreateUser", user_pb2.CreateUserRequest(name="A", email="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            "CreateUser",
            user_pb2.CreateUserRequest(name="A", email="b@example.com", password="short"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "CreateUser",
            user_pb2.CreateUserRequest(name="A", email="c@example.com", roles=["root"]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ("ListUsers", user_pb2.ListUsersRequest(page=-1), grpc.StatusCode.INVALID_ARGUMENT),
        ("ListUsers", user_pb2.ListUsersRequest(limit=-5), grpc.StatusCode.INVALID_ARGUMENT),
        ("ListUsers", user_pb2.ListUsersRequest(filter="x" * 101), grpc.StatusCode.INVALID_ARGUMENT),
        ("DeleteUser", user_pb2.DeleteUserRequest(id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_bad_requests_get_clear_codes(stub, call, request_message, code):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await getattr(stub, call)(request_message)
    assert error.value.code() == code


async def test_an_unknown_status_is_an_invalid_argument_and_changes_nothing(stub):
    created = await stub.CreateUser(user_pb2.CreateUserRequest(name="Ada", email=email()))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.UpdateUser(user_pb2.UpdateUserRequest(id=created.id, name="Changed", status=user_pb2.UNKNOWN))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await stub.GetUser(user_pb2.GetUserRequest(id=created.id))).name == "Ada"


async def test_a_duplicate_email_already_exists(stub):
    address = email()
    await stub.CreateUser(user_pb2.CreateUserRequest(name="Ada", email=address))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.CreateUser(user_pb2.CreateUserRequest(name="Ada", email=address.upper()))
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_list_pages_and_stream_with_a_literal_filter(stub):
    tag = uuid.uuid4().hex[:8]
    for i in range(3):
        await stub.CreateUser(user_pb2.CreateUserRequest(name=f"Li_st{tag}", email=f"l{i}-{tag}@example.com"))
    await stub.CreateUser(user_pb2.CreateUserRequest(name=f"LiXst{tag}", email=f"lx-{tag}@example.com"))
    page = await stub.ListUsers(user_pb2.ListUsersRequest(page=1, limit=2, filter=f"li_st{tag}"))
    assert (len(page.users), page.total, page.page, page.limit) == (2, 3, 1, 2)
    streamed = [user async for user in stub.StreamUsers(user_pb2.StreamUsersRequest(filter=f"LI_ST{tag}"))]
    assert len(streamed) == 3


async def test_a_database_that_cannot_serve_the_call_is_unavailable(tokens):
    engine = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    users = Users(
        repository=SqlUserRepository(engine=engine, events_exchange="unused"),
        hasher=Argon2PasswordHasher(),
        tokens=tokens,
    )
    try:
        async with serving(users) as address, stub_of(address) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.GetUser(user_pb2.GetUserRequest(id=str(uuid.uuid4())))
            with pytest.raises(grpc.aio.AioRpcError) as stream:
                async for _ in stub.StreamUsers(user_pb2.StreamUsersRequest()):
                    pass
    finally:
        await engine.dispose()
    assert (unary.value.code(), stream.value.code()) == (grpc.StatusCode.UNAVAILABLE,) * 2
    assert unary.value.details() == "the user store is unavailable"


async def test_calls_without_a_valid_service_token_are_unauthenticated(address):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetUser(user_pb2.GetUserRequest(id=str(uuid.uuid4())))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetUser(user_pb2.GetUserRequest(id=str(uuid.uuid4())), metadata=[("authorization", "Bearer x")])
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in stub.StreamUsers(user_pb2.StreamUsersRequest()):
                pass
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


RAW_METHODS = [("unary_unary", "/user.UserService/GetUser"), ("unary_stream", "/user.UserService/StreamUsers")]


@pytest.mark.parametrize(("kind", "method"), RAW_METHODS, ids=["GetUser", "StreamUsers"])
async def test_undecodable_bytes_without_a_token_are_unauthenticated(address, kind, method):
    async with grpc.aio.insecure_channel(address) as channel:
        error = await undecodable_call(channel, kind=kind, method=method)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "service token required"


@pytest.mark.parametrize(("kind", "method"), RAW_METHODS, ids=["GetUser", "StreamUsers"])
async def test_undecodable_bytes_with_a_token_are_invalid_argument_without_internals(address, kind, method):
    token = ServiceTokenIssuer(service="order-service", secret=SECRET, ttl_seconds=300).token_for(
        audience="user-service"
    )
    async with grpc.aio.insecure_channel(address) as channel:
        error = await undecodable_call(
            channel, kind=kind, method=method, metadata=[("authorization", f"Bearer {token}")]
        )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "request could not be decoded"
    assert not any(word in (error.details() or "") for word in ("Unexpected", "DecodeError", "class"))


async def test_health_is_open_and_serving(address):
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
