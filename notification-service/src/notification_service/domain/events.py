"""The events notification-service hears about, read from their message bodies.

From event-store's relay (routing key = event type; body = the recorded event):
    OrderPlaced          order.placed: the order's user, items, total and currency
    OrderStatusChanged   order.confirmed, order.shipped, order.cancelled (with a reason):
                         the order id only
From user-service's outbox (routing key = event type):
    UserChanged          user.created, user.updated: the user's name and email
    UserDeleted          user.deleted
Anything else under order.# or user.#:
    Unrecognised         recorded as handled and otherwise ignored

``parse_event`` raises InvalidMessage when a known type's body does not fit it: that
message goes down the retry path and ends as a dead letter, for a person to look at.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from notification_service.domain.errors import InvalidMessage
from notification_service.domain.model import OrderItem

ORDER_PLACED = "order.placed"
ORDER_CONFIRMED = "order.confirmed"
ORDER_SHIPPED = "order.shipped"
ORDER_CANCELLED = "order.cancelled"
USER_CREATED = "user.created"
USER_UPDATED = "user.updated"
USER_DELETED = "user.deleted"
ORDER_STATUS_EVENTS = frozenset({ORDER_CONFIRMED, ORDER_SHIPPED, ORDER_CANCELLED})
MAX_TEXT_LENGTH = 1000
MAX_ITEMS = 1000


@dataclass(frozen=True, slots=True)
class OrderPlaced:
    id: uuid.UUID
    order_id: uuid.UUID
    user_id: uuid.UUID
    items: tuple[OrderItem, ...]
    total: Decimal
    currency: str
    occurred_at: datetime
    type: str = ORDER_PLACED


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    id: uuid.UUID
    type: str  # order.confirmed, order.shipped or order.cancelled
    order_id: uuid.UUID
    reason: str | None  # order.cancelled only
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class UserChanged:
    id: uuid.UUID
    type: str  # user.created or user.updated
    user_id: uuid.UUID
    name: str
    email: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class UserDeleted:
    id: uuid.UUID
    user_id: uuid.UUID
    occurred_at: datetime
    type: str = USER_DELETED


@dataclass(frozen=True, slots=True)
class Unrecognised:
    type: str


Event = OrderPlaced | OrderStatusChanged | UserChanged | UserDeleted | Unrecognised


def parse_event(*, routing_key: str, body: Any) -> Event:
    """The event a message carries; its routing key says which type it is."""
    if routing_key == ORDER_PLACED or routing_key in ORDER_STATUS_EVENTS:
        return _order_event(routing_key=routing_key, body=_mapping(body, what="the body"))
    if routing_key in (USER_CREATED, USER_UPDATED, USER_DELETED):
        return _user_event(routing_key=routing_key, body=_mapping(body, what="the body"))
    return Unrecognised(type=routing_key)


def _order_event(*, routing_key: str, body: dict[str, Any]) -> OrderPlaced | OrderStatusChanged:
    event_id = _uuid(body.get("id"), what="id")
    data = _mapping(body.get("data"), what="data")
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    occurred_at = _time(metadata.get("occurred_at") or body.get("recorded_at"), what="occurred_at")
    order_id = _uuid(data.get("order_id"), what="data.order_id")
    if routing_key != ORDER_PLACED:
        reason = _text(data.get("reason", ""), what="data.reason") if routing_key == ORDER_CANCELLED else None
        return OrderStatusChanged(
            id=event_id, type=routing_key, order_id=order_id, reason=reason, occurred_at=occurred_at
        )
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items or len(raw_items) > MAX_ITEMS:
        raise InvalidMessage(f"data.items must be a list of 1 to {MAX_ITEMS} items")
    return OrderPlaced(
        id=event_id,
        order_id=order_id,
        user_id=_uuid(data.get("user_id"), what="data.user_id"),
        items=tuple(_item(raw) for raw in raw_items),
        total=_amount(data.get("total"), what="data.total"),
        currency=_text(data.get("currency"), what="data.currency", required=True),
        occurred_at=occurred_at,
    )


def _user_event(*, routing_key: str, body: dict[str, Any]) -> UserChanged | UserDeleted:
    event_id = _uuid(body.get("id"), what="id")
    data = _mapping(body.get("data"), what="data")
    user_id = _uuid(data.get("id"), what="data.id")
    occurred_at = _time(body.get("occurred_at"), what="occurred_at")
    if routing_key == USER_DELETED:
        return UserDeleted(id=event_id, user_id=user_id, occurred_at=occurred_at)
    email = _text(data.get("email"), what="data.email", required=True)
    if "@" not in email:
        raise InvalidMessage("data.email is not an address")
    return UserChanged(
        id=event_id,
        type=routing_key,
        user_id=user_id,
        name=_text(data.get("name", ""), what="data.name"),
        email=email,
        occurred_at=occurred_at,
    )


def _mapping(value: Any, *, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidMessage(f"{what} must be a JSON object")
    return value


def _uuid(value: Any, *, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as e:
        raise InvalidMessage(f"{what} must be a UUID") from e


def _time(value: Any, *, what: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidMessage(f"{what} must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise InvalidMessage(f"{what} must be an RFC 3339 time") from e
    # A time without an offset is taken as UTC, the only zone the services write.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _text(value: Any, *, what: str, required: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH or "\x00" in value:
        raise InvalidMessage(f"{what} must be text of at most {MAX_TEXT_LENGTH} characters")
    if required and not value.strip():
        raise InvalidMessage(f"{what} must not be empty")
    return value


def _amount(value: Any, *, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidMessage(f"{what} must be a decimal amount")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as e:
        raise InvalidMessage(f"{what} must be a decimal amount") from e
    if not amount.is_finite() or amount < 0:
        raise InvalidMessage(f"{what} must be a decimal amount of at least 0")
    return amount


def _item(raw: Any) -> OrderItem:
    item = _mapping(raw, what="an item")
    quantity = item.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise InvalidMessage("an item's quantity must be a whole number of at least 1")
    return OrderItem(
        sku=_text(item.get("sku"), what="an item's sku", required=True),
        quantity=quantity,
        unit_price=_amount(item.get("unit_price"), what="an item's unit_price"),
    )
