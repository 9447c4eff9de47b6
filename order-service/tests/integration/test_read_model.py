"""The orders read model, fed by a projection of the real event-store over gRPC."""

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
from interchange_common.migrations import upgrade
from interchange_common.projections import GrpcEventSource, ProjectionRunner
from interchange_common.projections import metadata as checkpoint_metadata
from interchange_common.tasks import background
from order_service.adapters.event_store import EventStoreOrders
from order_service.adapters.idempotency import metadata as idempotency_metadata
from order_service.adapters.read_model import OrderQueries, project, reset
from order_service.adapters.read_model import metadata as read_model_metadata
from order_service.bootstrap import MIGRATIONS
from order_service.domain.commands import handle
from order_service.domain.errors import ReadModelLagging
from order_service.domain.order import CancelOrder, ConfirmOrder, EventContext, Item, PlaceOrder

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


def context():
    return EventContext(occurred_at=datetime.now(UTC), correlation_id="req", causation_id="req")


async def place(store, user_id, *prices):
    order_id = uuid.uuid4()
    items = tuple(Item(f"S-{i}", 1, Decimal(price)) for i, price in enumerate(prices or ("9.99",)))
    return await handle(store=store, order_id=order_id, command=PlaceOrder(order_id, user_id, items), context=context())


async def test_a_client_reads_its_own_writes(engine, channel):
    store, user = EventStoreOrders(channel=channel), uuid.uuid4()
    async with projecting(engine, channel) as runner:
        queries = OrderQueries(engine=engine, applied=runner.applied)
        placed = await place(store, user, "4.75", "0.25")
        row = await queries.get(order_id=placed.id, min_version=placed.version, wait_seconds=10)
        assert row is not None
        assert (row.status, str(row.total), row.version) == ("PLACED", "5.00", 1)
        cancelled = await handle(store=store, order_id=placed.id, command=CancelOrder(), context=context())
        row = await queries.get(order_id=placed.id, min_version=cancelled.version, wait_seconds=10)
        assert row is not None
        assert (row.status, row.version) == ("CANCELLED", 2)


async def test_a_users_orders_are_listed_newest_first_and_only_theirs(engine, channel):
    store, user, other = EventStoreOrders(channel=channel), uuid.uuid4(), uuid.uuid4()
    async with projecting(engine, channel) as runner:
        queries = OrderQueries(engine=engine, applied=runner.applied)
        mine = [await place(store, user) for _ in range(3)]
        theirs = await place(store, other)
        for order in (*mine, theirs):
            assert await queries.get(order_id=order.id, min_version=1, wait_seconds=10)
        page, total = await queries.list_for_user(user_id=user, page=1, limit=2)
    assert total == 3
    assert [row.id for row in page] == [mine[2].id, mine[1].id]


async def test_a_rebuild_from_zero_gives_the_same_rows(engine, channel):
    store, user = EventStoreOrders(channel=channel), uuid.uuid4()
    async with projecting(engine, channel) as runner:
        queries = OrderQueries(engine=engine, applied=runner.applied)
        placed = await place(store, user)
        confirmed = await handle(store=store, order_id=placed.id, command=ConfirmOrder(), context=context())
        before = await queries.get(order_id=placed.id, min_version=confirmed.version, wait_seconds=10)
    rebuilt = ProjectionRunner(name="orders", engine=engine, source=GrpcEventSource(channel=channel), handler=project)
    await rebuilt.rebuild(reset=reset)
    async with projecting(engine, channel) as runner:
        queries = OrderQueries(engine=engine, applied=runner.applied)
        after = await queries.get(order_id=placed.id, min_version=confirmed.version, wait_seconds=10)
    assert after == before


async def test_waiting_for_a_version_that_never_comes_is_a_lagging_read_model(engine, channel):
    async with projecting(engine, channel) as runner:
        queries = OrderQueries(engine=engine, applied=runner.applied)
        with pytest.raises(ReadModelLagging):
            await queries.get(order_id=uuid.uuid4(), min_version=1, wait_seconds=0.2)
        assert await queries.get(order_id=uuid.uuid4()) is None
