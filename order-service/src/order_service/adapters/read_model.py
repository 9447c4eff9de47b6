"""The query side: orders as rows in order-service's own database, kept by a
projection of the event store's events (interchange_common.projections).

    orders        one row per order, as of the version of its last projected event
    project       the projection handler: runs in the runner's transaction, so the
                  row and the checkpoint move together (exactly once)
    OrderQueries  reads for the API; ``get`` can wait, bounded, until the row has
                  reached a version the caller just wrote (read your own writes)
"""

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, Numeric, String, Table, Uuid, func, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from interchange_common.events import RecordedEvent
from interchange_common.signal import Signal
from order_service.domain.errors import ReadModelLagging
from order_service.domain.order import (
    Item,
    Order,
    OrderPlaced,
    OrderStatus,
    event_from_stored,
    evolve,
    item_data,
    status_after,
)

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("items", JSONB, nullable=False),
    Column("total", Numeric(16, 2), nullable=False),  # the largest order totals 10^12
    Column("currency", String(3), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


async def project(conn: AsyncConnection, recorded: RecordedEvent) -> None:
    """Apply one event from the event store to the orders table."""
    if not recorded.type.startswith("order."):
        return
    event = event_from_stored(event_id=recorded.id, type_=recorded.type, data=recorded.data, metadata=recorded.metadata)
    if isinstance(event, OrderPlaced):
        placed = evolve(None, event, version=recorded.version)
        await conn.execute(
            insert(orders)
            .values(
                id=placed.id,
                user_id=placed.user_id,
                status=placed.status.value,
                items=[item_data(item) for item in placed.items],
                total=placed.total,
                currency=placed.currency,
                version=placed.version,
                created_at=placed.created_at,
                updated_at=placed.updated_at,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        return
    await conn.execute(
        update(orders)
        .where(orders.c.id == event.order_id, orders.c.version < recorded.version)
        .values(status=status_after(event).value, version=recorded.version, updated_at=event.context.occurred_at)
    )


async def reset(conn: AsyncConnection) -> None:
    """Empty the read model, for a rebuild from position 0."""
    await conn.execute(orders.delete())


def _order(row: Any) -> Order:
    return Order(
        id=row.id,
        user_id=row.user_id,
        status=OrderStatus(row.status),
        items=tuple(Item(i["sku"], int(i["quantity"]), Decimal(i["unit_price"])) for i in row.items),
        total=row.total,
        currency=row.currency,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class OrderQueries:
    def __init__(self, *, engine: AsyncEngine, applied: Signal, wait_seconds: float = 2.0) -> None:
        self._engine = engine
        self._applied = applied
        self._wait_seconds = wait_seconds

    async def get(
        self, *, order_id: uuid.UUID, min_version: int = 0, wait_seconds: float | None = None
    ) -> Order | None:
        """The order's row; with ``min_version``, waits (at most ``wait_seconds``) for
        the projection to reach it, so that a client reads its own write."""
        try:
            async with asyncio.timeout(self._wait_seconds if wait_seconds is None else wait_seconds):
                while True:
                    seen = self._applied.generation
                    async with self._engine.connect() as conn:
                        row = (await conn.execute(select(orders).where(orders.c.id == order_id))).first()
                    if row is not None and row.version >= min_version:
                        return _order(row)
                    if min_version == 0:
                        return None
                    await self._applied.wait(after=seen)
        except TimeoutError as e:
            raise ReadModelLagging(f"order {order_id} has not reached version {min_version} yet") from e

    async def list_for_user(self, *, user_id: uuid.UUID, page: int, limit: int) -> tuple[list[Order], int]:
        """One page of a user's orders, newest first, and how many there are."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(orders)
                    .where(orders.c.user_id == user_id)
                    .order_by(orders.c.created_at.desc(), orders.c.id)
                    .limit(limit)
                    .offset((page - 1) * limit)
                )
            ).all()
            total = await conn.scalar(select(func.count()).select_from(orders).where(orders.c.user_id == user_id))
        return [_order(row) for row in rows], int(total or 0)
