"""A real event-store process (the compose service, run natively on free ports)."""

import asyncio
from pathlib import Path

import pytest

from devstack.compose import read_env_file
from devstack.secrets import ensure_dev_secrets
from devstack.stack import Stack
from devstack.testing import delete_exchange, isolated_stack_options, run_id
from interchange_common.rpc import service_channel
from interchange_common.servicejwt import ServiceTokenIssuer

ROOT = Path(__file__).resolve().parents[3]
ENV_EXAMPLE = ROOT / ".env.example"


@pytest.fixture(scope="session")
def event_store(infra, tmp_path_factory):
    ensure_dev_secrets(root=ROOT)
    run = run_id()
    exchange = f"ic-it-orders-{run}.events"
    stack = Stack.prepare(
        options=isolated_stack_options(
            root=ROOT,
            run=run,
            purpose="it_orders",
            log_dir=tmp_path_factory.mktemp("order-service-stack"),
            only=frozenset({"event-store"}),
            env_overrides={"event-store": {"EVENTS_EXCHANGE": exchange}},
        ),
        infra=infra,
    )
    stack.start(health_timeout=60)
    try:
        yield f"127.0.0.1:{stack.port('event-store', 50054)}"
    finally:
        stack.stop(drop_databases_too=True)
        asyncio.run(delete_exchange(amqp_url=infra.rabbitmq_url, exchange=exchange))


@pytest.fixture(scope="session")
async def channel(event_store):
    secret = read_env_file(ENV_EXAMPLE)["SERVICE_JWT_SECRET"]
    issuer = ServiceTokenIssuer(service="order-service", secret=secret, ttl_seconds=600)
    channel = service_channel(target=event_store, issuer=issuer, audience="event-store")
    yield channel
    await channel.close()
