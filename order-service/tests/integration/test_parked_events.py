"""The orders projection with a poison event: an order.placed whose data the read
model cannot apply is parked and the projection goes on; admins list, replay and skip
it over the HTTP API (the gateway's /api/admin/parked-events), others get a 403.
A real PostgreSQL database with order-service's migrations; the projection's events
come from a list, as the event store would hand them over."""

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import assert_problem, throwaway_database
from interchange_common.events import RecordedEvent
from interchange_common.migrations import upgrade
from interchange_common.projections import ParkedEvents, ProjectionRunner, checkpoints
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from order_service.adapters.event_store import EventStoreOrders
from order_service.adapters.idempotency import SqlIdempotencyKeys
from order_service.adapters.read_model import OrderQueries, ProjectionParkedEvents, project
from order_service.bootstrap import MIGRATIONS, PROJECTION
from order_service.domain.ports import UserStatus
from order_service.domain.usecases import Orders, ParkedEventAdmin
from order_service.entrypoints.http import create_http_app

pytestmark = pytest.mark.integration
SECRET = "integration-secret-" + "p" * 32
ADMIN = {"x-actor-id": str(uuid.uuid4()), "x-actor-roles": "admin"}
USER = {"x-actor-id": str(uuid.uuid4()), "x-actor-roles": "user"}


@pytest.fixture(scope="module")
async def engine(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_order_parked") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        engine = create_async_engine(url)
        yield engine
        await engine.dispose()


async def next_position(engine) -> int:
    """The position after the orders projection's checkpoint: the tests of this module
    share its database, and each goes on from where the one before left it."""
    async with engine.connect() as conn:
        found = await conn.scalar(select(checkpoints.c.position).where(checkpoints.c.name == PROJECTION))
    return int(found or 0) + 1


def placed(position: int, *, user_id: uuid.UUID, without: str = "", **data: object) -> RecordedEvent:
    order_id = uuid.uuid4()
    fields = {
        "order_id": str(order_id),
        "user_id": str(user_id),
        "items": [{"sku": "P-1", "quantity": 1, "unit_price": "2.00"}],
        "total": "2.00",
        "currency": "EUR",
        **data,
    }
    return RecordedEvent(
        id=uuid.uuid4(),
        stream_id=f"order-{order_id}",
        type="order.placed",
        data={name: value for name, value in fields.items() if name != without},
        metadata={"occurred_at": datetime.now(UTC).isoformat(), "correlation_id": "c", "causation_id": "c"},
        version=1,
        position=position,
        recorded_at=datetime.now(UTC),
    )


class Listed:
    def __init__(self, events: list[RecordedEvent]) -> None:
        self._events = events

    async def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        for event in self._events:
            if event.position is not None and event.position >= start:
                yield event
        await asyncio.Event().wait()


class ActiveUsers:
    async def status(self, *, user_id):
        return UserStatus.ACTIVE


@contextlib.asynccontextmanager
async def client_of(engine, channel, handler=project):
    parked = ParkedEvents(name=PROJECTION, engine=engine, handler=handler)
    app = create_http_app(
        orders=Orders(
            store=EventStoreOrders(channel=channel),
            users=ActiveUsers(),
            read_model=OrderQueries(engine=engine),
            keys=SqlIdempotencyKeys(engine=engine, ttl=timedelta(hours=1)),
        ),
        parked=ParkedEventAdmin(parked=ProjectionParkedEvents(parked=parked)),
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


async def mended(conn, events):
    """The handler after the fix: an order.placed without a user is the system's."""
    system = str(uuid.UUID(int=0))
    await project(conn, [dataclasses.replace(event, data={"user_id": system, **event.data}) for event in events])


async def test_a_poison_order_event_is_parked_and_admins_replay_or_skip_it(engine, channel):
    owner = uuid.UUID(USER["x-actor-id"])
    at = await next_position(engine)
    first, poison, after = (
        placed(at, user_id=owner),
        placed(at + 1, user_id=owner, without="user_id"),
        placed(at + 2, user_id=owner),
    )
    runner = ProjectionRunner(
        name=PROJECTION, engine=engine, source=Listed([first, poison, after]), handler=project, retry_delays=(0.01,)
    )
    assert await runner.run(stop_after=3) == 3
    queries = OrderQueries(engine=engine)
    assert await queries.get(order_id=uuid.UUID(first.data["order_id"])) is not None
    assert await queries.get(order_id=uuid.UUID(after.data["order_id"])) is not None  # the projection went on
    assert await queries.get(order_id=uuid.UUID(poison.data["order_id"])) is None

    async with client_of(engine, channel) as client:
        assert_problem(await client.get("/internal/admin/parked-events", headers=USER), 403)
        listed = await client.get("/internal/admin/parked-events", headers=ADMIN)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert (body["total"], body["page"], body["limit"]) == (1, 1, 10)
        [item] = body["items"]
        assert (item["event_id"], item["position"], item["stream_id"], item["type"]) == (
            str(poison.id),
            at + 1,
            poison.stream_id,
            "order.placed",
        )
        assert (item["projection"], item["error"], item["attempts"]) == (PROJECTION, "KeyError: 'user_id'", 4)
        assert item["data"] == poison.data

        # Replayed with the same handler, it fails again: a 409 that says why, and it stays.
        replay = f"/internal/admin/parked-events/{item['id']}/replay"
        assert_problem(await client.post(replay, headers=USER), 403)
        failed = assert_problem(await client.post(replay, headers=ADMIN), 409)
        assert "KeyError: 'user_id'" in failed["detail"]
        [kept] = (await client.get("/internal/admin/parked-events", headers=ADMIN)).json()["items"]
        assert (kept["id"], kept["attempts"]) == (item["id"], 5)

    async with client_of(engine, channel, handler=mended) as client:
        replayed = await client.post(replay, headers=ADMIN)
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {"id": item["id"], "event_id": str(poison.id)}
        assert await queries.get(order_id=uuid.UUID(poison.data["order_id"])) is not None
        assert (await client.get("/internal/admin/parked-events", headers=ADMIN)).json()["total"] == 0
        assert_problem(await client.post(replay, headers=ADMIN), 404)


async def test_skipping_discards_a_parked_event_and_unknown_ids_are_not_found(engine, channel):
    poison = placed(await next_position(engine), user_id=uuid.uuid4(), items="not a list")
    runner = ProjectionRunner(
        name=PROJECTION, engine=engine, source=Listed([poison]), handler=project, retry_delays=(0.01,)
    )
    assert await runner.run(stop_after=1) == 1
    async with client_of(engine, channel) as client:
        [item] = (await client.get("/internal/admin/parked-events", headers=ADMIN)).json()["items"]
        assert item["event_id"] == str(poison.id)
        path = f"/internal/admin/parked-events/{item['id']}"
        assert_problem(await client.delete(path, headers=USER), 403)
        skipped = await client.delete(path, headers=ADMIN)
        assert skipped.status_code == 204, skipped.text
        assert (await client.get("/internal/admin/parked-events", headers=ADMIN)).json()["items"] == []
        assert_problem(await client.delete(path, headers=ADMIN), 404)
        for unknown in (str(uuid.uuid4()), "not-an-id"):
            assert_problem(await client.delete(f"/internal/admin/parked-events/{unknown}", headers=ADMIN), 404)
            assert_problem(await client.post(f"/internal/admin/parked-events/{unknown}/replay", headers=ADMIN), 404)
