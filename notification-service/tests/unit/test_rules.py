"""The pure rules: recipients in any arrival order, and what each order event makes."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from notification_service.domain.errors import RecipientUnknown
from notification_service.domain.events import OrderPlaced, OrderStatusChanged, UserChanged, UserDeleted
from notification_service.domain.model import KnownOrder, OrderItem, Recipient
from notification_service.domain.rules import known_order, order_effect, recipient_after

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
USER = uuid.uuid4()
ORDER = KnownOrder(
    order_id=uuid.uuid4(),
    user_id=USER,
    items=(OrderItem("BOOK-1", 2, Decimal("5.00")), OrderItem("PEN-7", 1, Decimal("2.50"))),
    total=Decimal("12.50"),
    currency="EUR",
)
ADA = Recipient(user_id=USER, email="ada@example.com", name="Ada", deleted=False, as_of=T0)


def changed(*, at, email="ada@example.com", kind="user.updated"):
    return UserChanged(id=uuid.uuid4(), type=kind, user_id=USER, name="Ada", email=email, occurred_at=at)


def deleted(*, at):
    return UserDeleted(id=uuid.uuid4(), user_id=USER, occurred_at=at)


def status(kind, *, reason=None):
    return OrderStatusChanged(id=uuid.uuid4(), type=kind, order_id=ORDER.order_id, reason=reason, occurred_at=T0)


def placed():
    return OrderPlaced(
        id=uuid.uuid4(),
        order_id=ORDER.order_id,
        user_id=USER,
        items=ORDER.items,
        total=ORDER.total,
        currency="EUR",
        occurred_at=T0,
    )


def test_the_first_event_about_a_user_makes_the_recipient():
    assert recipient_after(current=None, event=changed(at=T0, kind="user.created")) == ADA


def test_a_newer_update_wins_and_an_older_one_changes_nothing():
    newer = recipient_after(current=ADA, event=changed(at=T0 + timedelta(seconds=1), email="new@example.com"))
    assert newer is not None
    assert newer.email == "new@example.com"
    assert recipient_after(current=newer, event=changed(at=T0, email="old@example.com")) is None


def test_updates_applied_in_any_order_end_in_the_newest_state():
    updates = [changed(at=T0 + timedelta(seconds=i), email=f"v{i}@example.com") for i in range(5)]
    for order in (updates, updates[::-1], [updates[2], updates[4], updates[0], updates[3], updates[1]]):
        current = None
        for update in order:
            current = recipient_after(current=current, event=update) or current
        assert current is not None
        assert current.email == "v4@example.com"


def test_a_deletion_is_not_undone_by_an_older_update_and_wins_a_tie():
    gone = recipient_after(current=ADA, event=deleted(at=T0))
    assert gone is not None
    assert (gone.deleted, gone.email) == (True, None)
    assert recipient_after(current=gone, event=changed(at=T0)) is None
    assert recipient_after(current=gone, event=changed(at=T0 - timedelta(seconds=1))) is None
    assert recipient_after(current=ADA, event=changed(at=T0)) is None  # the same instant: first one stays


def test_a_deletion_before_the_creation_leaves_a_tombstone():
    tombstone = recipient_after(current=None, event=deleted(at=T0 + timedelta(seconds=5)))
    assert tombstone is not None
    assert recipient_after(current=tombstone, event=changed(at=T0, kind="user.created")) is None


def test_order_placed_makes_a_notification_and_a_confirmation_mail():
    event = placed()
    effect = order_effect(event=event, order=known_order(event=event), recipient=ADA, now=T0)
    assert effect.notification is not None
    assert effect.mail is not None
    assert effect.notification.title == "Order confirmed"
    assert effect.notification.data == {
        "order_id": str(ORDER.order_id),
        "total": "12.50",
        "currency": "EUR",
        "items": 2,
    }
    mail = effect.mail
    assert (mail.to_address, mail.to_name, mail.event_id) == ("ada@example.com", "Ada", event.id)
    assert mail.message_id == f"<{event.id}@interchange.local>"
    assert str(ORDER.order_id) in mail.subject
    for text in (
        str(ORDER.order_id),
        "2 x BOOK-1 at 5.00 EUR = 10.00 EUR",
        "1 x PEN-7 at 2.50 EUR",
        "Total: 12.50 EUR",
    ):
        assert text in mail.body


def test_the_same_event_always_makes_the_same_ids():
    event = placed()
    first = order_effect(event=event, order=ORDER, recipient=ADA, now=T0)
    again = order_effect(event=event, order=ORDER, recipient=ADA, now=T0 + timedelta(hours=1))
    assert first.notification is not None
    assert again.notification is not None
    assert first.mail is not None
    assert again.mail is not None
    assert (first.notification.id, first.mail.id) == (again.notification.id, again.mail.id)


def test_order_cancelled_mails_the_reason_items_and_total():
    effect = order_effect(event=status("order.cancelled", reason="out of stock"), order=ORDER, recipient=ADA, now=T0)
    assert effect.notification is not None
    assert effect.mail is not None
    assert effect.notification.title == "Order cancelled"
    assert effect.notification.data["reason"] == "out of stock"
    assert "has been cancelled" in effect.mail.body
    assert "Reason: out of stock" in effect.mail.body
    assert "Total: 12.50 EUR" in effect.mail.body


@pytest.mark.parametrize(("kind", "title"), [("order.confirmed", "Order accepted"), ("order.shipped", "Order shipped")])
def test_confirmed_and_shipped_make_a_notification_only(kind, title):
    effect = order_effect(event=status(kind), order=ORDER, recipient=ADA, now=T0)
    assert effect.mail is None
    assert effect.notification is not None
    assert (effect.notification.type, effect.notification.title) == (kind, title)


def test_an_unknown_recipient_is_an_error_to_retry():
    with pytest.raises(RecipientUnknown, match=str(USER)):
        order_effect(event=placed(), order=ORDER, recipient=None, now=T0)


def test_a_deleted_recipient_gets_nothing():
    gone = Recipient(user_id=USER, email=None, name=None, deleted=True, as_of=T0)
    effect = order_effect(event=placed(), order=ORDER, recipient=gone, now=T0)
    assert (effect.notification, effect.mail) == (None, None)
