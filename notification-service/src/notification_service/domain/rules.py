"""The rules: what each event does to what notification-service keeps.

recipient_after     a user event applied to the recipient as known; an event older
                    than what is known changes nothing (events may arrive out of order)
welcome             user.created → a welcome notification (no mail)
order_effect        order.placed → notification + confirmation mail;
                    order.cancelled → notification + cancellation mail;
                    order.confirmed, order.shipped → notification only.
                    An order whose user is not known yet is an error (RecipientUnknown):
                    the message is retried and, if the user never arrives, dead-lettered.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notification_service.domain.errors import RecipientUnknown
from notification_service.domain.events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_PLACED,
    ORDER_SHIPPED,
    USER_DELETED,
    OrderPlaced,
    OrderStatusChanged,
    UserChanged,
    UserDeleted,
)
from notification_service.domain.model import (
    KnownOrder,
    Mail,
    Notification,
    Recipient,
    mail_id_of,
    notification_id_of,
)

_TITLES = {
    ORDER_PLACED: "Order confirmed",
    ORDER_CONFIRMED: "Order accepted",
    ORDER_SHIPPED: "Order shipped",
    ORDER_CANCELLED: "Order cancelled",
}
_MAILED = frozenset({ORDER_PLACED, ORDER_CANCELLED})


@dataclass(frozen=True, slots=True)
class Effect:
    """What one event makes; nothing at all for a user who has been deleted."""

    notification: Notification | None = None
    mail: Mail | None = None


def recipient_after(*, current: Recipient | None, event: UserChanged | UserDeleted) -> Recipient | None:
    """The recipient once ``event`` is applied, or None when the event is older than
    what is known (then it changes nothing). At the same instant a deletion wins."""
    if current is not None:
        if event.occurred_at < current.as_of:
            return None
        if event.occurred_at == current.as_of and (current.deleted or event.type != USER_DELETED):
            return None
    if isinstance(event, UserDeleted):
        return Recipient(user_id=event.user_id, email=None, name=None, deleted=True, as_of=event.occurred_at)
    return Recipient(user_id=event.user_id, email=event.email, name=event.name, deleted=False, as_of=event.occurred_at)


def welcome(*, event: UserChanged, now: datetime) -> Notification:
    greeting = f"Hello {event.name}, your" if event.name.strip() else "Your"
    return Notification(
        id=notification_id_of(event_id=event.id),
        user_id=event.user_id,
        type=event.type,
        title="Welcome to Interchange",
        body=f"{greeting} account is ready.",
        data={"user_id": str(event.user_id)},
        event_id=event.id,
        created_at=now,
    )


def known_order(*, event: OrderPlaced) -> KnownOrder:
    return KnownOrder(
        order_id=event.order_id,
        user_id=event.user_id,
        items=event.items,
        total=event.total,
        currency=event.currency,
    )


def order_effect(
    *, event: OrderPlaced | OrderStatusChanged, order: KnownOrder, recipient: Recipient | None, now: datetime
) -> Effect:
    """What an order event makes for the order's user."""
    if recipient is None:
        raise RecipientUnknown(f"user {order.user_id} of order {order.order_id} is not known yet")
    if recipient.deleted or recipient.email is None:
        return Effect()
    reason = event.reason if isinstance(event, OrderStatusChanged) else None
    data: dict[str, Any] = {
        "order_id": str(order.order_id),
        "total": str(order.total),
        "currency": order.currency,
        "items": len(order.items),
    }
    if reason:
        data["reason"] = reason
    notification = Notification(
        id=notification_id_of(event_id=event.id),
        user_id=order.user_id,
        type=event.type,
        title=_TITLES[event.type],
        body=_summary(event_type=event.type, order=order, reason=reason),
        data=data,
        event_id=event.id,
        created_at=now,
    )
    mail = None
    if event.type in _MAILED:
        mail = Mail(
            id=mail_id_of(event_id=event.id),
            event_id=event.id,
            to_address=recipient.email,
            to_name=recipient.name or "",
            subject=f"{_TITLES[event.type]}: order {order.order_id}",
            body=mail_text(event_type=event.type, order=order, name=recipient.name or "", reason=reason),
            created_at=now,
        )
    return Effect(notification=notification, mail=mail)


def _money(order: KnownOrder, amount: object) -> str:
    return f"{amount} {order.currency}"


def _summary(*, event_type: str, order: KnownOrder, reason: str | None) -> str:
    count = sum(item.quantity for item in order.items)
    what = f"{count} item{'s' if count != 1 else ''}, total {_money(order, order.total)}"
    if event_type == ORDER_PLACED:
        return f"We have your order {order.order_id} ({what})."
    if event_type == ORDER_CONFIRMED:
        return f"Your order {order.order_id} ({what}) has been accepted and is being prepared."
    if event_type == ORDER_SHIPPED:
        return f"Your order {order.order_id} ({what}) is on its way."
    because = f" Reason: {reason}." if reason else ""
    return f"Your order {order.order_id} ({what}) has been cancelled.{because}"


def mail_text(*, event_type: str, order: KnownOrder, name: str, reason: str | None) -> str:
    """The plain-text mail: what happened, the order id, its items and total."""
    greeting = f"Hello {name}," if name.strip() else "Hello,"
    if event_type == ORDER_PLACED:
        happened = f"thank you for your order {order.order_id}. We have received it:"
    else:
        happened = f"your order {order.order_id} has been cancelled."
        if reason:
            happened += f"\nReason: {reason}"
        happened += "\nIt contained:"
    lines = [
        f"  {item.quantity} x {item.sku} at {_money(order, item.unit_price)} = {_money(order, item.subtotal)}"
        for item in order.items
    ]
    return "\n".join(
        [greeting, "", happened, "", *lines, "", f"Total: {_money(order, order.total)}", "", "Interchange", ""]
    )
