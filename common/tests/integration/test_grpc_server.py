"""The open methods of a server from create_server (health and reflection, which
need no service token) on a real port: request bytes that do not decode get
INVALID_ARGUMENT with a plain message, for each request kind they have (unary, and
streamed requests: reflection's ServerReflectionInfo)."""

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from devstack.testing import free_port, undecodable_call
from interchange_common.rpc import create_server
from interchange_common.servicejwt import ServiceTokenVerifier

pytestmark = pytest.mark.integration
SECRET = "grpc-server-test-secret-" + uuid.uuid4().hex
SERVICE = "test.Nothing"


@pytest.fixture(scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    port = free_port()
    server, _ = create_server(
        verifier=ServiceTokenVerifier(service="nothing", secret=SECRET),
        service_names=[SERVICE],
        register=lambda _: None,
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(grace=None)


@pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("unary_unary", "/grpc.health.v1.Health/Check"),
        ("unary_stream", "/grpc.health.v1.Health/Watch"),
        ("stream_stream", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
    ],
    ids=["Check", "Watch", "ServerReflectionInfo"],
)
async def test_undecodable_requests_are_invalid_argument_without_internals(channel, kind, method):
    error = await undecodable_call(channel, kind=kind, method=method)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "request could not be decoded"
    assert not any(word in (error.details() or "") for word in ("Unexpected", "DecodeError", "class"))
