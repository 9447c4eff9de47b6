"""The orders read model, fed by a projection of the real event-store over gRPC and
by the commands' own results."""

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import throwaway_database
from interchange_common.events import RecordedEvent
from interchange_common.migrations import upgrade
from interchange_common.projections import GrpcEventSource, ProjectionRunner
from interchange_common.projections import metadata as checkpoint_metadata
from interchange_common.tasks import background
from order_service.adapters.event_store import EventStoreOrders
from order_service.adapters.idempotency import metadata as idempotency_metadata
from order_service.adapters.read_model import OrderQueries, project, reset
from order_service.adapters.read_model import metadata as read_model_metadata
from order_service.bootstrap import MIGRATIONS
from order_service.domain.handler import handle
from order_service.domain.order import (
    CancelOrder,
    ConfirmOrder,
    EventContext,
    Item,
    OrderCancelled,
    OrderConfirmed,
    OrderPlaced,
    OrderShipped,
    OrderStatus,
    PlaceOrder,
    event_data,
    event_metadata,
    stream_id,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def engine(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_order_reads") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        engine = create_async_engine(url)
        yield engine
        await engine.dispose()


async def test_the_migrations_create_exactly_the_tables_the_code_uses(engine):
    def differences(conn):
        context = MigrationContext.configure(conn)
        combined = MetaData()
        for metadata in (read_model_metadata, idempotency_metadata, checkpoint_metadata):
            for table in metadata.tables.values():
                table.to_metadata(combined)
        return compare_metadata(context, combined)

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


@contextlib.asynccontextmanager
async def projecting(engine, channel):
    runner = ProjectionRunner(name="orders", engine=engine, source=GrpcEventSource(channel=channel), handler=project)
    async with background(runner.run()):
        yield runner


async def projected(queries, runner, order_id, version):
    """The order's row once the projection has brought it to ``version`` (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            seen = runner.applied.generation
            row = await queries.get(order_id=order_id)
            if row is not None and row.version >= version:
                return row
            await runner.applied.wait(after=seen)


def context():
    return EventContext(occurred_at=datetime.now(UTC), correlation_id="req", causation_id="req")


async def place(store, user_id, *prices):
    order_id = uuid.uuid4()
    items = tuple(Item(f"S-{i}", 1, Decimal(price)) for i, price in enumerate(prices or ("9.99",)))
    return await handle(store=store, order_id=order_id, command=PlaceOrder(order_id, user_id, items), context=context())


async def test_the_projection_keeps_the_rows(engine, channel):
    store, user = EventStoreOrders(channel=channel), uuid.uuid4()
    queries = OrderQueries(engine=engine)
    async with projecting(engine, channel) as runner:
        placed = await place(store, user, "4.75", "0.25")
        row = await projected(queries, runner, placed.id, placed.version)
        assert (row.status, str(row.total), row.version) == ("PLACED", "5.00", 1)
        cancelled = await handle(store=store, order_id=placed.id, command=CancelOrder(), context=context())
        row = await projected(queries, runner, placed.id, cancelled.version)
        assert row == cancelled


async def test_a_recorded_command_is_read_at_once_and_never_moved_back(engine, channel):
    store, user = EventStoreOrders(channel=channel), uuid.uuid4()
    queries = OrderQueries(engine=engine)
    placed = await place(store, user)
    await queries.record(order=placed)
    assert await queries.get(order_id=placed.id) == placed
    confirmed = await handle(store=store, order_id=placed.id, command=ConfirmOrder(), context=context())
    cancelled = await handle(store=store, order_id=placed.id, command=CancelOrder(), context=context())
    await queries.record(order=cancelled)
    await queries.record(order=confirmed)  # a slower command's older result comes second
    assert await queries.get(order_id=placed.id) == cancelled
    barrier = await place(store, uuid.uuid4())
    async with projecting(engine, channel) as runner:
        # The projection applies all three events, then the barrier's: in global
        # order, so once the barrier's row is there, the three have been applied.
        await projected(queries, runner, barrier.id, 1)
    assert await queries.get(order_id=placed.id) == cancelled
    page, total = await queries.list_for_user(user_id=user, page=1, limit=10)
    assert (page, total) == ([cancelled], 1)


async def test_a_users_orders_are_listed_newest_first_and_only_theirs(engine, channel):
    store, user, other = EventStoreOrders(channel=channel), uuid.uuid4(), uuid.uuid4()
    queries = OrderQueries(engine=engine)
    async with projecting(engine, channel) as runner:
        mine = [await place(store, user) for _ in range(3)]
        theirs = await place(store, other)
        for order in (*mine, theirs):
            await projected(queries, runner, order.id, 1)
        page, total = await queries.list_for_user(user_id=user, page=1, limit=2)
    assert total == 3
    assert [row.id for row in page] == [mine[2].id, mine[1].id]


async def test_a_rebuild_from_zero_gives_the_same_rows(engine, channel):
    store, user = EventStoreOrders(channel=channel), uuid.uuid4()
    queries = OrderQueries(engine=engine)
    async with projecting(engine, channel) as runner:
        placed = await place(store, user)
        confirmed = await handle(store=store, order_id=placed.id, command=ConfirmOrder(), context=context())
        before = await projected(queries, runner, placed.id, confirmed.version)
    rebuilt = ProjectionRunner(name="orders", engine=engine, source=GrpcEventSource(channel=channel), handler=project)
    await rebuilt.rebuild(reset=reset)
    async with projecting(engine, channel) as runner:
        after = await projected(queries, runner, placed.id, confirmed.version)
    assert after == before == confirmed


def recorded(event, *, version):
    return RecordedEvent(
        id=event.id,
        stream_id=stream_id(event.order_id),
        type=event.type,
        data=event_data(event),
        metadata=event_metadata(event),
        version=version,
        position=None,
        recorded_at=datetime.now(UTC),
    )


async def test_a_batch_is_projected_in_its_order(engine):
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def placed(order_id):
        items = (Item("S-1", 2, Decimal("1.50")),)
        return OrderPlaced(uuid.uuid4(), context(), order_id, uuid.uuid4(), items, Decimal("3.00"), "EUR")

    other = RecordedEvent(
        id=uuid.uuid4(),
        stream_id="user-1",
        type="user.registered",
        data={},
        metadata={},
        version=1,
        position=None,
        recorded_at=datetime.now(UTC),
    )
    batch = [
        recorded(placed(a), version=1),
        recorded(placed(b), version=1),
        recorded(OrderConfirmed(uuid.uuid4(), context(), a), version=2),
        other,
        recorded(placed(c), version=1),
        recorded(OrderShipped(uuid.uuid4(), context(), a), version=3),
        recorded(OrderCancelled(uuid.uuid4(), context(), b, "changed my mind"), version=2),
        recorded(OrderConfirmed(uuid.uuid4(), context(), c), version=2),
    ]
    async with engine.begin() as conn:
        await project(conn, batch)
    queries = OrderQueries(engine=engine)
    found = {order_id: await queries.get(order_id=order_id) for order_id in (a, b, c)}
    assert {order_id: (row.status, row.version) for order_id, row in found.items() if row is not None} == {
        a: (OrderStatus.SHIPPED, 3),
        b: (OrderStatus.CANCELLED, 2),
        c: (OrderStatus.CONFIRMED, 2),
    }


async def test_an_unknown_order_is_none(engine):
    assert await OrderQueries(engine=engine).get(order_id=uuid.uuid4()) is None
