"""The query side: orders as rows in order-service's own database, kept by a
projection of the event store's events (interchange_common.projections).

    orders        one row per order, as of the version of its last projected event
    project       the projection handler: runs in the runner's transaction, so the
                  rows and the checkpoint move together (exactly once); a batch of
                  events costs a statement per run of alike events, not per event
    OrderQueries  reads for the API, and ``record``: a command's result written
                  before the command answers (read your own writes)
    ProjectionParkedEvents
                  the events ``project`` kept failing on, parked by the runner
                  (interchange_common.projections): listed, replayed, skipped

Two writers keep a row, and neither ever moves it back: the projection, event by
event, and ``record``, with the state a command just appended. A row only moves to
a higher version, so whichever comes second leaves it as it is; both write the
state that ``evolve`` gives at that version.
"""

import logging
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Executable,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Uuid,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from interchange_common.database import translating_unavailable
from interchange_common.events import RecordedEvent
from interchange_common.projections import ParkedEvent, ParkedEventNotFound, ParkedEvents, ReplayFailed
from order_service.domain.errors import ParkedEventNotFound as NoSuchParkedEvent
from order_service.domain.errors import ParkedEventStillFails
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

_log = logging.getLogger(__name__)
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


# The statements that write the table, built once. The projection's two each run for
# a run of events at a time.
_PLACE = insert(orders).on_conflict_do_nothing(index_elements=["id"])
_MOVE = (
    update(orders)
    .where(orders.c.id == bindparam("order_id"), orders.c.version < bindparam("to_version"))
    .values(status=bindparam("to_status"), version=bindparam("to_version"), updated_at=bindparam("at"))
)
_upsert = insert(orders)
# A command's result: the row created, or brought up to a newer version.
_RECORD = _upsert.on_conflict_do_update(
    index_elements=["id"],
    set_={
        "status": _upsert.excluded.status,
        "version": _upsert.excluded.version,
        "updated_at": _upsert.excluded.updated_at,
    },
    where=orders.c.version < _upsert.excluded.version,
)


async def project(conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
    """Apply events from the event store to the orders table, in their order: each run
    of events that take the same statement goes to the database in one call."""
    statement: Executable | None = None
    rows: list[dict[str, Any]] = []
    for recorded in events:
        if not recorded.type.startswith("order."):
            continue
        event = event_from_stored(
            event_id=recorded.id, type_=recorded.type, data=recorded.data, metadata=recorded.metadata
        )
        needs: Executable = _PLACE if isinstance(event, OrderPlaced) else _MOVE
        if needs is not statement:
            if statement is not None:
                await conn.execute(statement, rows)
            statement, rows = needs, []
        if isinstance(event, OrderPlaced):
            rows.append(_row(evolve(None, event, version=recorded.version)))
        else:
            rows.append(
                {
                    "order_id": event.order_id,
                    "to_status": status_after(event).value,
                    "to_version": recorded.version,
                    "at": event.context.occurred_at,
                }
            )
    if statement is not None:
        await conn.execute(statement, rows)


def _row(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "user_id": order.user_id,
        "status": order.status.value,
        "items": [item_data(item) for item in order.items],
        "total": order.total,
        "currency": order.currency,
        "version": order.version,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


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
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine
        # One statement, atomic by itself: no BEGIN and COMMIT round trips around it.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def get(self, *, order_id: uuid.UUID) -> Order | None:
        """The order's row, as new as the last command that answered (see ``record``)."""
        with translating_unavailable(action="read the order"):
            async with self._engine.connect() as conn:
                row = (await conn.execute(select(orders).where(orders.c.id == order_id))).first()
        return None if row is None else _order(row)

    async def record(self, *, order: Order) -> None:
        """Bring the order's row up to ``order``, unless it is already as new. A
        failure is logged, not raised: the events are stored, the command succeeded,
        and the projection brings the row there shortly."""
        try:
            async with self._autocommit.connect() as conn:
                await conn.execute(_RECORD, _row(order))
        except (SQLAlchemyError, OSError) as e:
            _log.warning(
                "read model not updated by the command; the projection will",
                extra={"order_id": str(order.id), "version": order.version, "error": type(e).__name__},
            )

    async def list_for_user(self, *, user_id: uuid.UUID, page: int, limit: int) -> tuple[list[Order], int]:
        """One page of a user's orders, newest first, and how many there are."""
        with translating_unavailable(action="list the orders"):
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


class ProjectionParkedEvents:
    """The domain's ParkedEvents port over the projection runner's own."""

    def __init__(self, *, parked: ParkedEvents) -> None:
        self._parked = parked

    async def list(self, *, page: int, limit: int) -> tuple[list[ParkedEvent], int]:
        with translating_unavailable(action="list the parked events"):
            return await self._parked.list(offset=(page - 1) * limit, limit=limit)

    async def replay(self, *, parked_id: uuid.UUID) -> ParkedEvent:
        try:
            with translating_unavailable(action="replay the parked event"):
                return await self._parked.replay(parked_id=parked_id)
        except ParkedEventNotFound as e:
            raise NoSuchParkedEvent("parked event not found") from e
        except ReplayFailed as e:
            raise ParkedEventStillFails(f"the event failed again and stays parked: {e.error}") from e

    async def skip(self, *, parked_id: uuid.UUID) -> ParkedEvent:
        try:
            with translating_unavailable(action="skip the parked event"):
                return await self._parked.skip(parked_id=parked_id)
        except ParkedEventNotFound as e:
            raise NoSuchParkedEvent("parked event not found") from e
