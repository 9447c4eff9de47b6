import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from order_service.domain.errors import InvalidOrder, InvalidTransition, OrderNotFound
from order_service.domain.order import (
    MAX_ITEMS,
    CancelOrder,
    ConfirmOrder,
    EventContext,
    Item,
    OrderPlaced,
    OrderStatus,
    PlaceOrder,
    ShipOrder,
    decide,
    event_data,
    event_from_stored,
    event_metadata,
    evolve,
    fold,
)

CONTEXT = EventContext(occurred_at=datetime(2026, 11, 27, 12, tzinfo=UTC), correlation_id="req-1", causation_id="req-1")


def place(*items):
    return PlaceOrder(uuid.uuid4(), uuid.uuid4(), tuple(items or (Item("A-1", 2, Decimal("4.75")),)))


def run(*commands):
    """Decide and evolve through the commands, as the service does; returns the state."""
    state, version = None, 0
    for command in commands:
        for event in decide(command, state, context=CONTEXT):
            version += 1
            state = evolve(state, event, version=version)
    return state


def test_placing_totals_the_items_exactly():
    events = decide(place(Item("A-1", 3, Decimal("0.10")), Item("B-2", 1, Decimal("19.99"))), None, context=CONTEXT)
    assert len(events) == 1
    assert isinstance(events[0], OrderPlaced)
    assert events[0].total == Decimal("20.29")
    assert events[0].type == "order.placed"
    assert events[0].context.correlation_id == "req-1"


def test_the_happy_path_moves_through_every_status():
    order = run(place(), ConfirmOrder(), ShipOrder())
    assert (order.status, order.version) == (OrderStatus.SHIPPED, 3)


@pytest.mark.parametrize(
    ("commands", "refused"),
    [
        ((place(), ConfirmOrder(), ShipOrder()), CancelOrder()),
        ((place(), CancelOrder()), CancelOrder()),
        ((place(), CancelOrder()), ConfirmOrder()),
        ((place(),), ShipOrder()),
        ((place(), ConfirmOrder()), ConfirmOrder()),
    ],
    ids=["cancel-shipped", "cancel-twice", "confirm-cancelled", "ship-unconfirmed", "confirm-twice"],
)
def test_transitions_the_status_does_not_allow_are_refused(commands, refused):
    state = run(*commands)
    with pytest.raises(InvalidTransition):
        decide(refused, state, context=CONTEXT)


def test_a_placed_or_confirmed_order_can_be_cancelled():
    assert run(place(), CancelOrder(reason="changed my mind")).status is OrderStatus.CANCELLED
    assert run(place(), ConfirmOrder(), CancelOrder()).status is OrderStatus.CANCELLED


def test_commands_on_no_order_and_a_second_placement_are_refused():
    with pytest.raises(OrderNotFound):
        decide(CancelOrder(), None, context=CONTEXT)
    with pytest.raises(InvalidTransition):
        decide(place(), run(place()), context=CONTEXT)


@pytest.mark.parametrize(
    "items",
    [
        (),
        (Item("A", 0, Decimal(1)),),
        (Item("A", -1, Decimal(1)),),
        (Item("A", 1, Decimal(-1)),),
        (Item("A", 1, Decimal("0.001")),),
        (Item("A", 1, Decimal("NaN")),),
        (Item("", 1, Decimal(1)),),
        (Item("A\n", 1, Decimal(1)),),
        tuple(Item(f"S{i}", 1, Decimal(1)) for i in range(MAX_ITEMS + 1)),
    ],
    ids=["none", "zero", "negative", "negative-price", "sub-cent", "nan", "empty-sku", "newline-sku", "too-many"],
)
def test_bad_items_are_refused(items):
    with pytest.raises(InvalidOrder):
        decide(PlaceOrder(uuid.uuid4(), uuid.uuid4(), items), None, context=CONTEXT)


def test_events_survive_their_stored_form():
    state, version, stored = None, 0, []
    for command in (place(Item("A-1", 2, Decimal("4.75"))), ConfirmOrder(), CancelOrder(reason="late")):
        for event in decide(command, state, context=CONTEXT):
            version += 1
            state = evolve(state, event, version=version)
            stored.append((version, event.id, event.type, event_data(event), event_metadata(event)))
    rebuilt = fold([(v, event_from_stored(event_id=i, type_=t, data=d, metadata=m)) for v, i, t, d, m in stored])
    assert rebuilt == state


def test_folding_from_a_snapshot_continues_from_it():
    order = run(place(), ConfirmOrder())
    events = decide(ShipOrder(), order, context=CONTEXT)
    shipped = fold([(3, events[0])], start=order)
    assert shipped is not None
    assert (shipped.status, shipped.version) == (OrderStatus.SHIPPED, 3)


@pytest.mark.parametrize("reason", ["x" * 201, "line\nbreak", "nul\x00", "lone \ud800"])
def test_bad_cancel_reasons_are_refused(reason):
    with pytest.raises(InvalidOrder):
        decide(CancelOrder(reason=reason), run(place()), context=CONTEXT)


@pytest.mark.parametrize(("given", "stored"), [("1E+2", "100.00"), ("-0", "0.00"), ("4.5", "4.50")])
def test_prices_are_stored_in_canonical_form(given, stored):
    (event,) = decide(place(Item("A", 1, Decimal(given))), None, context=CONTEXT)
    assert isinstance(event, OrderPlaced)
    assert str(event.items[0].unit_price) == stored


def test_event_times_must_carry_a_time_zone():
    naive = EventContext(occurred_at=datetime(2026, 1, 1), correlation_id="r", causation_id="r")
    with pytest.raises(ValueError, match="time zone"):
        decide(place(), None, context=naive)


def test_something_that_is_not_an_order_command_is_refused():
    with pytest.raises(TypeError):
        decide("ship it", run(place()), context=CONTEXT)  # type: ignore[arg-type]
