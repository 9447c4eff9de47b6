"""A gRPC channel to the real event store (devstack's event_store_grpc fixture: the
compose service run natively on free ports, alone with its own database); the
user-service process is devstack's user_service_grpc."""

from pathlib import Path

import pytest

from devstack.compose import read_env_file
from interchange_common.rpc import service_channel
from interchange_common.servicejwt import ServiceTokenIssuer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def secret():
    """The shared service-token secret the processes run with."""
    return read_env_file(ROOT / ".env.example")["SERVICE_JWT_SECRET"]


@pytest.fixture(scope="session")
async def channel(event_store_grpc, secret):
    issuer = ServiceTokenIssuer(service="order-service", secret=secret, ttl_seconds=600)
    channel = service_channel(target=event_store_grpc, issuer=issuer, audience="event-store")
    yield channel
    await channel.close()
