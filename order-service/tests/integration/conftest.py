"""Real event-store and user-service processes (the compose services, run natively
on free ports, each alone with its own databases and exchange)."""

from pathlib import Path

import pytest

from devstack.compose import read_env_file
from devstack.testing import isolated_stack, run_id
from interchange_common.rpc import service_channel
from interchange_common.servicejwt import ServiceTokenIssuer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def secret():
    """The shared service-token secret the processes run with."""
    return read_env_file(ROOT / ".env.example")["SERVICE_JWT_SECRET"]


@pytest.fixture(scope="session")
def event_store(infra, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("event-store")
    only = frozenset({"event-store"})
    with isolated_stack(root=ROOT, infra=infra, run=run_id(), purpose="it_orders", log_dir=log_dir, only=only) as stack:
        yield f"127.0.0.1:{stack.port('event-store', 50054)}"


@pytest.fixture(scope="session")
def user_service(infra, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("user-service")
    only = frozenset({"user-service"})
    with isolated_stack(root=ROOT, infra=infra, run=run_id(), purpose="it_orders", log_dir=log_dir, only=only) as stack:
        yield f"127.0.0.1:{stack.port('user-service', 50051)}"


@pytest.fixture(scope="session")
async def channel(event_store, secret):
    issuer = ServiceTokenIssuer(service="order-service", secret=secret, ttl_seconds=600)
    channel = service_channel(target=event_store, issuer=issuer, audience="event-store")
    yield channel
    await channel.close()
