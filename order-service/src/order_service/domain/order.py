"""The order as a decider: ``decide(command, state) -> events``, ``evolve(state, event) -> state``.

State is never stored: it is the fold of the order's events (from a snapshot on).
Commands are what callers ask for; events are what happened, past tense, each with
its own id, the time, and the correlation and causation ids.

    PLACED ──confirm──▶ CONFIRMED ──ship──▶ SHIPPED
      │                    │
      └──────cancel────────┴──▶ CANCELLED
"""

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from order_service.domain.errors import InvalidOrder, InvalidTransition, OrderNotFound

MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = Decimal("1000000")
MAX_REASON_LENGTH = 200
CURRENCY = "EUR"
_CENT = Decimal("0.01")


class OrderStatus(StrEnum):
    PLACED = "PLACED"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def subtotal(self) -> Decimal:
        return self.unit_price * self.quantity


# ---- commands -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    order_id: uuid.UUID
    user_id: uuid.UUID
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class CancelOrder:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ConfirmOrder:
    pass


@dataclass(frozen=True, slots=True)
class ShipOrder:
    pass


Command = PlaceOrder | CancelOrder | ConfirmOrder | ShipOrder

# ---- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventContext:
    """Where an event comes from: when, and which request (and message) caused it."""

    occurred_at: datetime
    correlation_id: str
    causation_id: str


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    id: uuid.UUID
    context: EventContext
    order_id: uuid.UUID
    user_id: uuid.UUID
    items: tuple[Item, ...]
    total: Decimal
    currency: str
    type: str = field(default="order.placed", init=False)


@dataclass(frozen=True, slots=True)
class OrderConfirmed:
    id: uuid.UUID
    context: EventContext
    order_id: uuid.UUID
    type: str = field(default="order.confirmed", init=False)


@dataclass(frozen=True, slots=True)
class OrderShipped:
    id: uuid.UUID
    context: EventContext
    order_id: uuid.UUID
    type: str = field(default="order.shipped", init=False)


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    id: uuid.UUID
    context: EventContext
    order_id: uuid.UUID
    reason: str
    type: str = field(default="order.cancelled", init=False)


Event = OrderPlaced | OrderConfirmed | OrderShipped | OrderCancelled

# ---- state --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    items: tuple[Item, ...]
    total: Decimal
    currency: str
    version: int  # the version of the last event folded in
    created_at: datetime
    updated_at: datetime


def check_items(items: tuple[Item, ...]) -> tuple[Item, ...]:
    """The items, checked, with prices in their canonical form (1E+2 → 100.00, -0 → 0.00)."""
    if not items:
        raise InvalidOrder("an order needs at least one item")
    if len(items) > MAX_ITEMS:
        raise InvalidOrder(f"an order holds at most {MAX_ITEMS} items")
    for item in items:
        if not item.sku or len(item.sku) > 64 or not item.sku.isprintable():
            raise InvalidOrder("a sku is 1 to 64 printable characters")
        if not 1 <= item.quantity <= MAX_QUANTITY:
            raise InvalidOrder(f"quantity must be 1 to {MAX_QUANTITY}")
        if not item.unit_price.is_finite() or not Decimal(0) <= item.unit_price <= MAX_UNIT_PRICE:
            raise InvalidOrder(f"unit_price must be 0 to {MAX_UNIT_PRICE}")
        if item.unit_price.quantize(_CENT) != item.unit_price:
            raise InvalidOrder("unit_price has at most two decimal places")
    return tuple(replace(item, unit_price=item.unit_price.quantize(_CENT) + Decimal("0.00")) for item in items)


def check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON_LENGTH or (reason and not reason.isprintable()):
        raise InvalidOrder(f"a reason is at most {MAX_REASON_LENGTH} printable characters")
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidOrder("a reason must be valid Unicode text") from e
    return reason


def decide(command: Command, state: Order | None, *, context: EventContext) -> list[Event]:
    """The events a command causes, or an error; the state is not changed here."""
    if context.occurred_at.tzinfo is None:
        raise ValueError("event times must carry their time zone")
    if isinstance(command, PlaceOrder):
        if state is not None:
            raise InvalidTransition("the order exists already")
        items = check_items(command.items)
        total = sum((item.subtotal for item in items), Decimal(0)).quantize(_CENT)
        return [OrderPlaced(uuid.uuid4(), context, command.order_id, command.user_id, items, total, CURRENCY)]
    if state is None:
        raise OrderNotFound("no such order")
    if isinstance(command, CancelOrder):
        reason = check_reason(command.reason)
        if state.status not in (OrderStatus.PLACED, OrderStatus.CONFIRMED):
            raise InvalidTransition(f"a {state.status.value.lower()} order can no longer be cancelled")
        return [OrderCancelled(uuid.uuid4(), context, state.id, reason)]
    if isinstance(command, ConfirmOrder):
        if state.status is not OrderStatus.PLACED:
            raise InvalidTransition(f"a {state.status.value.lower()} order cannot be confirmed")
        return [OrderConfirmed(uuid.uuid4(), context, state.id)]
    if isinstance(command, ShipOrder):
        if state.status is not OrderStatus.CONFIRMED:
            raise InvalidTransition(f"a {state.status.value.lower()} order cannot be shipped")
        return [OrderShipped(uuid.uuid4(), context, state.id)]
    raise TypeError(f"not an order command: {command!r}")


_STATUS_AFTER: dict[type, OrderStatus] = {
    OrderConfirmed: OrderStatus.CONFIRMED,
    OrderShipped: OrderStatus.SHIPPED,
    OrderCancelled: OrderStatus.CANCELLED,
}


def status_after(event: Event) -> OrderStatus:
    return OrderStatus.PLACED if isinstance(event, OrderPlaced) else _STATUS_AFTER[type(event)]


def evolve(state: Order | None, event: Event, *, version: int) -> Order:
    """The order after one more event, recorded at ``version`` in its stream."""
    at = event.context.occurred_at
    if isinstance(event, OrderPlaced):
        return Order(
            event.order_id, event.user_id, OrderStatus.PLACED, event.items, event.total, event.currency, version, at, at
        )
    if state is None:
        raise InvalidTransition(f"{event.type} before order.placed")
    return replace(state, status=status_after(event), version=version, updated_at=at)


def fold(events: list[tuple[int, Event]], *, start: Order | None = None) -> Order | None:
    """Rebuild state from (version, event) pairs, from a snapshot when given."""
    state = start
    for version, event in events:
        state = evolve(state, event, version=version)
    return state


def stream_id(order_id: uuid.UUID) -> str:
    return f"order-{order_id}"


# ---- the stored form ----------------------------------------------------------


def item_data(item: Item) -> dict[str, Any]:
    return {"sku": item.sku, "quantity": item.quantity, "unit_price": str(item.unit_price)}


def event_data(event: Event) -> dict[str, Any]:
    """What goes into the event store's ``data`` (money as decimal strings)."""
    if isinstance(event, OrderPlaced):
        return {
            "order_id": str(event.order_id),
            "user_id": str(event.user_id),
            "items": [item_data(item) for item in event.items],
            "total": str(event.total),
            "currency": event.currency,
        }
    if isinstance(event, OrderCancelled):
        return {"order_id": str(event.order_id), "reason": event.reason}
    return {"order_id": str(event.order_id)}


def event_metadata(event: Event) -> dict[str, Any]:
    return {
        "occurred_at": event.context.occurred_at.isoformat(),
        "correlation_id": event.context.correlation_id,
        "causation_id": event.context.causation_id,
    }


def event_from_stored(*, event_id: uuid.UUID, type_: str, data: dict[str, Any], metadata: dict[str, Any]) -> Event:
    context = EventContext(
        occurred_at=datetime.fromisoformat(metadata["occurred_at"]),
        correlation_id=str(metadata.get("correlation_id", "")),
        causation_id=str(metadata.get("causation_id", "")),
    )
    order_id = uuid.UUID(data["order_id"])
    if type_ == "order.placed":
        items = tuple(Item(i["sku"], int(i["quantity"]), Decimal(i["unit_price"])) for i in data["items"])
        return OrderPlaced(
            event_id, context, order_id, uuid.UUID(data["user_id"]), items, Decimal(data["total"]), data["currency"]
        )
    if type_ == "order.cancelled":
        return OrderCancelled(event_id, context, order_id, str(data.get("reason", "")))
    if type_ == "order.confirmed":
        return OrderConfirmed(event_id, context, order_id)
    if type_ == "order.shipped":
        return OrderShipped(event_id, context, order_id)
    raise InvalidOrder(f"unknown event type {type_}")


def snapshot_data(order: Order) -> dict[str, Any]:
    return {
        "id": str(order.id),
        "user_id": str(order.user_id),
        "status": order.status.value,
        "items": [item_data(item) for item in order.items],
        "total": str(order.total),
        "currency": order.currency,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
    }


def order_from_snapshot(data: dict[str, Any], *, version: int) -> Order:
    return Order(
        id=uuid.UUID(data["id"]),
        user_id=uuid.UUID(data["user_id"]),
        status=OrderStatus(data["status"]),
        items=tuple(Item(i["sku"], int(i["quantity"]), Decimal(i["unit_price"])) for i in data["items"]),
        total=Decimal(data["total"]),
        currency=data["currency"],
        version=version,
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )
