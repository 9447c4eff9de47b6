"""A poison event in the event store (docs/api.md "Operations", parked events): an
order.placed whose data the orders read model cannot apply, appended over gRPC as a
buggy writer holding a service token would. The read model parks it and goes on
with the events after it; an admin sees it, replays it (it fails again: kept, with
its error) and skips it, all through the gateway."""

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from devstack.testing import assert_problem, wait_for
from interchange_common.contracts import eventstore_pb2 as pb
from interchange_common.contracts import eventstore_pb2_grpc as pb_grpc
from interchange_common.servicejwt import ServiceTokenIssuer

ITEMS = [{"sku": "PARK-1", "quantity": 1, "unit_price": "3.00"}]
PARKED = "/api/admin/parked-events"


@pytest.fixture(scope="module")
def event_store(target) -> Iterator[pb_grpc.EventStoreStub]:
    target.need("ports", "service_jwt_secret")
    with grpc.insecure_channel(f"127.0.0.1:{target.ports.port('event-store', 50054)}") as channel:
        yield pb_grpc.EventStoreStub(channel)


def append_order_placed(target, event_store, *, data: dict[str, object]) -> str:
    """Append an order.placed with ``data`` to a new order stream, as order-service
    would (its service token, its metadata); the event's id."""
    token = ServiceTokenIssuer(service="order-service", secret=target.service_jwt_secret, ttl_seconds=60).token_for(
        audience="event-store"
    )
    event_id = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()
    event = pb.NewEvent(
        id=event_id,
        type="order.placed",
        data=json.dumps(data).encode(),
        metadata=json.dumps(
            {"occurred_at": now, "correlation_id": "e2e-parked", "causation_id": "e2e-parked"}
        ).encode(),
    )
    event_store.Append(
        pb.AppendRequest(
            stream_id=f"order-{data['order_id']}",
            expected_version=pb.ExpectedVersion(no_stream=Empty()),
            events=[event],
        ),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=5,
    )
    return event_id


def parked_event(gateway, admin, event_id):
    listed = gateway.get(PARKED, params={"limit": 100}, headers=admin.headers)
    assert listed.status_code == 200, listed.text
    return next((item for item in listed.json()["items"] if item["event_id"] == event_id), None)


def in_list(gateway, account, order_id):
    response = gateway.get("/api/orders", params={"limit": 100}, headers=account.headers)
    assert response.status_code == 200, response.text
    return order_id in {order["id"] for order in response.json()["items"]}


def test_a_poison_event_is_parked_the_read_model_goes_on_and_an_admin_skips_it(
    gateway, target, event_store, admin, new_account
):
    me = new_account("Parked Events")
    poison_order = str(uuid.uuid4())
    # No user, and items that are not a list: the read model cannot make an order of it.
    poison_id = append_order_placed(target, event_store, data={"order_id": poison_order, "items": "not a list"})
    # After it, an order that only the projection writes into the read model (no
    # command answered for it): listed once the projection went past the poison.
    later_order = str(uuid.uuid4())
    append_order_placed(
        target,
        event_store,
        data={"order_id": later_order, "user_id": me.id, "items": ITEMS, "total": "3.00", "currency": "EUR"},
    )
    wait_for(lambda: in_list(gateway, me, later_order), timeout=30, what="the order after the poison event listed")
    placed = gateway.post("/api/orders", json={"items": ITEMS}, headers=me.headers)
    assert placed.status_code == 201, placed.text
    assert in_list(gateway, me, placed.json()["id"])

    parked = wait_for(lambda: parked_event(gateway, admin, poison_id), timeout=10, what="the poison event parked")
    assert (parked["type"], parked["stream_id"], parked["projection"]) == (
        "order.placed",
        f"order-{poison_order}",
        "orders",
    )
    assert parked["data"] == {"order_id": poison_order, "items": "not a list"}
    assert parked["error"].startswith("TypeError: string indices")  # the items, a string, indexed by "sku"
    assert parked["attempts"] > 1
    assert parked["position"] > 0

    replay, one = f"{PARKED}/{parked['id']}/replay", f"{PARKED}/{parked['id']}"
    for method, path in (("GET", PARKED), ("POST", replay), ("DELETE", one)):
        assert_problem(gateway.request(method, path, headers=me.headers), 403)

    # Replayed as it is, it fails again: 409 with the error, and it stays parked.
    failed = assert_problem(gateway.post(replay, headers=admin.headers), 409)
    assert parked["error"] in failed["detail"]
    kept = parked_event(gateway, admin, poison_id)
    assert kept is not None
    assert (kept["id"], kept["error"], kept["attempts"]) == (parked["id"], parked["error"], parked["attempts"] + 1)

    skipped = gateway.delete(one, headers=admin.headers)
    assert skipped.status_code == 204, skipped.text
    assert parked_event(gateway, admin, poison_id) is None
    assert_problem(gateway.delete(one, headers=admin.headers), 404)
    assert_problem(gateway.post(replay, headers=admin.headers), 404)
    assert in_list(gateway, me, later_order)


def test_an_unknown_parked_event_is_not_found(gateway, admin):
    unknown = uuid.uuid4()
    assert_problem(gateway.delete(f"{PARKED}/{unknown}", headers=admin.headers), 404)
    assert_problem(gateway.post(f"{PARKED}/{unknown}/replay", headers=admin.headers), 404)
