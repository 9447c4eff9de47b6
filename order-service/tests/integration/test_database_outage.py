"""The HTTP API when PostgreSQL cannot serve a request: a 503 problem with Retry-After
(the request may be sent again), one warning line, and nothing changed."""

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import assert_problem, free_port, throwaway_database
from interchange_common.migrations import upgrade
from interchange_common.projections import ParkedEvents
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from order_service.adapters.event_store import EventStoreOrders
from order_service.adapters.idempotency import SqlIdempotencyKeys, idempotency_keys
from order_service.adapters.read_model import OrderQueries, ProjectionParkedEvents, orders, project
from order_service.bootstrap import MIGRATIONS
from order_service.domain.ports import UserStatus
from order_service.domain.usecases import Orders, ParkedEventAdmin
from order_service.entrypoints.http import create_http_app

pytestmark = pytest.mark.integration
SECRET = "integration-secret-" + "o" * 32
BODY = {"items": [{"sku": "A-1", "quantity": 1, "unit_price": "2.50"}]}


@pytest.fixture(scope="module")
async def database_url(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_order_outage") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        yield url


class ActiveUsers:
    """The user check, not under test here: every user may order."""

    async def status(self, *, user_id):
        return UserStatus.ACTIVE


@contextlib.asynccontextmanager
async def client_of(engine, channel):
    """order-service's HTTP app over ``engine``, called as the gateway calls it."""
    app = create_http_app(
        orders=Orders(
            store=EventStoreOrders(channel=channel),
            users=ActiveUsers(),
            read_model=OrderQueries(engine=engine),
            keys=SqlIdempotencyKeys(engine=engine, ttl=timedelta(hours=1)),
        ),
        parked=ParkedEventAdmin(
            parked=ProjectionParkedEvents(parked=ParkedEvents(name="orders", engine=engine, handler=project))
        ),
        verifier=ServiceTokenVerifier(service="order-service", secret=SECRET),
        health_checks=lambda: [],
        max_body_bytes=4096,
    )
    token = ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=300).token_for(audience="order-service")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://order-service",
        headers={"authorization": f"Bearer {token}"},
    ) as client:
        yield client


@contextlib.asynccontextmanager
async def nothing_listening(database_url):
    """An engine whose server refuses the connection: nothing listens on its port."""
    engine = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    yield engine
    await engine.dispose()


@contextlib.asynccontextmanager
async def pool_exhausted(database_url):
    """An engine on the real database whose only connection is taken, and whose pool
    gives up waiting for it after 0.2 s."""
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    async with engine.connect():
        yield engine
    await engine.dispose()


async def rows_for(database_url, user_id):
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            keys = await conn.scalar(
                select(func.count()).select_from(idempotency_keys).where(idempotency_keys.c.user_id == user_id)
            )
            placed = await conn.scalar(select(func.count()).select_from(orders).where(orders.c.user_id == user_id))
        return keys, placed
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("outage", "cause"),
    [(nothing_listening, "ConnectionRefusedError"), (pool_exhausted, "TimeoutError")],
    ids=["nothing-listening", "pool-exhausted"],
)
async def test_a_request_the_database_cannot_serve_is_a_retryable_503(outage, cause, database_url, channel, caplog):
    user = uuid.uuid4()
    actor = {"x-actor-id": str(user), "x-actor-roles": "user"}
    place = {**actor, "idempotency-key": "outage-1"}
    requests = [
        ("POST", "/internal/orders", place, BODY),
        ("GET", "/internal/orders", actor, None),
        ("GET", f"/internal/orders/{uuid.uuid4()}", actor, None),
        ("GET", "/internal/admin/parked-events", {"x-actor-id": str(uuid.uuid4()), "x-actor-roles": "admin"}, None),
    ]
    async with outage(database_url) as engine, client_of(engine, channel) as client:
        for method, path, headers, body in requests:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="interchange.database"):
                response = await client.request(method, path, headers=headers, json=body)
            problem = assert_problem(response, 503)
            assert response.headers["retry-after"] == "1"
            assert problem["detail"] == "the database is unavailable"
            [line] = [record for record in caplog.records if record.name == "interchange.database"]
            assert (line.levelname, line.getMessage()) == ("WARNING", "database unavailable")
            assert line.error == cause
    assert await rows_for(database_url, user) == (0, 0)
    # Nothing was done, so sending the same request again places the order once.
    engine = create_async_engine(database_url)
    try:
        async with client_of(engine, channel) as client:
            placed = await client.post("/internal/orders", headers=place, json=BODY)
            assert placed.status_code == 201, placed.text
            again = await client.post("/internal/orders", headers=place, json=BODY)
            assert (again.status_code, again.json()["id"]) == (200, placed.json()["id"])
    finally:
        await engine.dispose()
    assert await rows_for(database_url, user) == (1, 1)
