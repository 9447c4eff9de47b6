"""Orders kept in the real event-store: load, save at the expected version, snapshots,
and concurrent commands on one order."""

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from interchange_common.contracts import eventstore_pb2 as pb
from interchange_common.contracts import eventstore_pb2_grpc as pb_grpc
from order_service.adapters.event_store import EventStoreOrders
from order_service.domain.errors import ConcurrencyConflict, InvalidTransition
from order_service.domain.handler import handle
from order_service.domain.order import (
    CancelOrder,
    ConfirmOrder,
    EventContext,
    Item,
    OrderStatus,
    PlaceOrder,
    decide,
    stream_id,
)

pytestmark = pytest.mark.integration


def context():
    return EventContext(occurred_at=datetime.now(UTC), correlation_id="req-1", causation_id="req-1")


def placing(order_id):
    return PlaceOrder(order_id, uuid.uuid4(), (Item("A-1", 2, Decimal("4.75")),))


async def test_an_order_is_stored_as_events_and_loads_back(channel):
    store = EventStoreOrders(channel=channel)
    order_id = uuid.uuid4()
    placed = await handle(store=store, order_id=order_id, command=placing(order_id), context=context())
    confirmed = await handle(store=store, order_id=order_id, command=ConfirmOrder(), context=context())
    assert (placed.version, confirmed.version, confirmed.status) == (1, 2, OrderStatus.CONFIRMED)
    assert await store.load(order_id=order_id) == confirmed
    history = await pb_grpc.EventStoreStub(channel).ReadStream(pb.ReadStreamRequest(stream_id=stream_id(order_id)))
    assert [event.type for event in history.events] == ["order.placed", "order.confirmed"]


async def test_a_stale_save_is_a_conflict_and_changes_nothing(channel):
    store = EventStoreOrders(channel=channel)
    order_id = uuid.uuid4()
    stale = await handle(store=store, order_id=order_id, command=placing(order_id), context=context())
    await handle(store=store, order_id=order_id, command=ConfirmOrder(), context=context())
    with pytest.raises(ConcurrencyConflict):
        await store.save(order=stale, events=decide(CancelOrder(), stale, context=context()), order_id=order_id)
    current = await store.load(order_id=order_id)
    assert current is not None
    assert current.status is OrderStatus.CONFIRMED


async def test_concurrent_cancels_record_exactly_one(channel):
    store = EventStoreOrders(channel=channel)
    order_id = uuid.uuid4()
    await handle(store=store, order_id=order_id, command=placing(order_id), context=context())
    results = await asyncio.gather(
        *(handle(store=store, order_id=order_id, command=CancelOrder(), context=context()) for _ in range(5)),
        return_exceptions=True,
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InvalidTransition | ConcurrencyConflict)]
    assert len(done) == 1
    assert len(refused) == 4
    history = await pb_grpc.EventStoreStub(channel).ReadStream(pb.ReadStreamRequest(stream_id=stream_id(order_id)))
    assert [event.type for event in history.events] == ["order.placed", "order.cancelled"]


async def test_state_comes_from_the_snapshot_plus_later_events(channel):
    store = EventStoreOrders(channel=channel, snapshot_every=2)
    order_id = uuid.uuid4()
    await handle(store=store, order_id=order_id, command=placing(order_id), context=context())
    await handle(store=store, order_id=order_id, command=ConfirmOrder(), context=context())  # version 2: snapshot
    await handle(store=store, order_id=order_id, command=CancelOrder(), context=context())
    stub = pb_grpc.EventStoreStub(channel)
    snapshot = await stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=stream_id(order_id)))
    assert snapshot.version == 2
    loaded = await store.load(order_id=order_id)
    assert loaded is not None
    assert (loaded.status, loaded.version) == (OrderStatus.CANCELLED, 3)


async def test_an_unknown_order_loads_as_none(channel):
    assert await EventStoreOrders(channel=channel).load(order_id=uuid.uuid4()) is None
