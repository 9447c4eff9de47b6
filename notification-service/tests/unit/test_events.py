"""Reading events from message bodies: every known shape, and the ones that do not fit."""

import uuid
from decimal import Decimal

import pytest

from notification_service.domain.errors import InvalidMessage
from notification_service.domain.events import (
    OrderPlaced,
    OrderStatusChanged,
    Unrecognised,
    UserChanged,
    UserDeleted,
    parse_event,
)
from notification_service.domain.model import OrderItem


def test_order_placed_carries_user_items_and_total(events):
    order_id, user_id = uuid.uuid4(), uuid.uuid4()
    message = events.order(order_id=order_id, user_id=user_id)
    event = parse_event(routing_key=message.routing_key, body=message.body)
    assert isinstance(event, OrderPlaced)
    assert (event.id, event.order_id, event.user_id) == (uuid.UUID(message.message_id), order_id, user_id)
    assert event.items == (OrderItem("BOOK-1", 2, Decimal("5.00")), OrderItem("PEN-7", 1, Decimal("2.50")))
    assert (event.total, event.currency) == (Decimal("12.50"), "EUR")
    assert event.occurred_at.tzinfo is not None


@pytest.mark.parametrize("routing_key", ["order.confirmed", "order.shipped", "order.cancelled"])
def test_status_changes_name_only_the_order(events, routing_key):
    order_id = uuid.uuid4()
    message = events.order(routing_key, order_id=order_id)
    event = parse_event(routing_key=routing_key, body=message.body)
    assert isinstance(event, OrderStatusChanged)
    assert (event.type, event.order_id) == (routing_key, order_id)
    assert event.reason == ("changed my mind" if routing_key == "order.cancelled" else None)


def test_user_events(events):
    user_id = uuid.uuid4()
    created = parse_event(routing_key="user.created", body=events.user(user_id=user_id, email="a@b.example").body)
    deleted = parse_event(routing_key="user.deleted", body=events.user("user.deleted", user_id=user_id).body)
    assert isinstance(created, UserChanged)
    assert (created.user_id, created.email, created.name) == (user_id, "a@b.example", "Ada")
    assert isinstance(deleted, UserDeleted)
    assert deleted.user_id == user_id


@pytest.mark.parametrize("routing_key", ["order.refunded", "user.logged_in", "order"])
def test_other_types_are_unrecognised_whatever_the_body(routing_key):
    assert parse_event(routing_key=routing_key, body="not even an object") == Unrecognised(type=routing_key)


def _broken(body, path, value):
    *parents, last = path
    target = body
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return body


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("id",), "not-a-uuid"),
        (("data",), []),
        (("data", "order_id"), KeyError),
        (("data", "user_id"), 42),
        (("data", "items"), []),
        (("data", "items"), [{"sku": "A", "quantity": 0, "unit_price": "1"}]),
        (("data", "items"), [{"sku": "A", "quantity": True, "unit_price": "1"}]),
        (("data", "items"), [{"sku": "", "quantity": 1, "unit_price": "1"}]),
        (("data", "items"), [{"sku": "A", "quantity": 1, "unit_price": "NaN"}]),
        (("data", "total"), "-1"),
        (("data", "total"), "twelve"),
        (("data", "currency"), None),
        (("metadata", "occurred_at"), "yesterday"),
    ],
)
def test_an_order_placed_that_does_not_fit_is_invalid(events, path, value):
    message = events.order(order_id=uuid.uuid4(), user_id=uuid.uuid4())
    message.body["recorded_at"] = None
    with pytest.raises(InvalidMessage):
        parse_event(routing_key="order.placed", body=_broken(message.body, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [(("data", "email"), "no-at-sign"), (("data", "email"), None), (("occurred_at",), 17), (("data", "id"), "x")],
)
def test_a_user_event_that_does_not_fit_is_invalid(events, path, value):
    message = events.user(user_id=uuid.uuid4())
    with pytest.raises(InvalidMessage):
        parse_event(routing_key="user.created", body=_broken(message.body, path, value))


@pytest.mark.parametrize("body", [None, [], "text", 3])
def test_a_known_type_needs_an_object(body):
    with pytest.raises(InvalidMessage):
        parse_event(routing_key="order.placed", body=body)
