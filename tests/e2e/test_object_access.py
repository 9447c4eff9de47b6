"""Object-level authorization on every endpoint, with two users (issue 7).

Another user's user record or order is a 404 for them (they cannot even learn it
exists) and nothing about it changes; admin-only endpoints are a 403 for a user; the
lists hold only the caller's own. The tables below must name every route of the
gateway that takes an object id or needs the admin role: a route added without a
row fails the first test.
"""

import uuid

import httpx
import pytest

from devstack.accounts import Account
from gateway.domain.model import Access
from gateway.domain.routes import ROUTES

# Routes on one object that belongs to a user: (method, path) → a body for the call.
OWNED: dict[tuple[str, str], dict[str, object] | None] = {
    ("GET", "/api/users/{user_id}"): None,
    ("PATCH", "/api/users/{user_id}"): {"name": "Taken Over"},
    ("DELETE", "/api/users/{user_id}"): None,
    ("GET", "/api/orders/{order_id}"): None,
    ("POST", "/api/orders/{order_id}/cancel"): None,
    ("GET", "/api/orders/{order_id}/events"): None,
}
ADMIN_ONLY = {(route.method, route.path) for route in ROUTES if route.access is Access.ADMIN}
ITEMS = [{"sku": "MINE-1", "quantity": 1, "unit_price": "2.00"}]


def test_the_tables_name_every_object_and_admin_route():
    with_ids = {(route.method, route.path) for route in ROUTES if "{" in route.path}
    assert with_ids - ADMIN_ONLY <= set(OWNED), with_ids - ADMIN_ONLY - set(OWNED)
    assert {
        ("GET", "/api/users"),
        ("POST", "/api/orders/{order_id}/confirm"),
        ("POST", "/api/orders/{order_id}/ship"),
        ("GET", "/api/admin/dead-letters"),
        ("POST", "/api/admin/dead-letters/{letter_id}/replay"),
        ("DELETE", "/api/admin/dead-letters/{letter_id}"),
        ("GET", "/api/admin/parked-events"),
        ("POST", "/api/admin/parked-events/{parked_id}/replay"),
        ("DELETE", "/api/admin/parked-events/{parked_id}"),
    } == ADMIN_ONLY


@pytest.fixture
def ann_and_her_order(gateway, new_account) -> tuple[Account, dict[str, str]]:
    ann = new_account("Ann")
    placed = gateway.post(
        "/api/orders", json={"items": ITEMS}, headers={**ann.headers, "Idempotency-Key": str(uuid.uuid4())}
    )
    assert placed.status_code == 201, placed.text
    ids = {"user_id": ann.id, "order_id": placed.json()["id"]}
    return ann, {**ids, "letter_id": str(uuid.uuid4()), "parked_id": str(uuid.uuid4())}


def call(gateway: httpx.Client, account: Account, method: str, path: str, ids: dict[str, str], body=None):
    return gateway.request(method, path.format(**ids), json=body, headers=account.headers)


@pytest.mark.parametrize(("method", "path"), sorted(OWNED))
def test_another_users_object_is_a_404_and_stays_as_it_was(method, path, gateway, new_account, ann_and_her_order):
    ann, ids = ann_and_her_order
    bob = new_account("Bob")
    owned_path = path.format(**ids).rsplit("/", 1)[0] if path.endswith(("/cancel", "/events")) else path.format(**ids)
    before = gateway.get(owned_path, headers=ann.headers)
    assert before.status_code == 200, before.text

    refused = call(gateway, bob, method, path, ids, OWNED[(method, path)])
    assert refused.status_code == 404, (method, path, refused.status_code, refused.text)
    assert refused.headers["content-type"] == "application/problem+json"

    after = gateway.get(owned_path, headers=ann.headers)
    assert after.status_code == 200
    assert after.json() == before.json()  # nothing about it changed
    # The owner may (the same call, so the 404 above was about whose it is).
    assert call(gateway, ann, method, path, ids, OWNED[(method, path)]).status_code in (200, 204)


@pytest.mark.parametrize(("method", "path"), sorted(ADMIN_ONLY))
def test_admin_routes_are_a_403_for_a_user_even_on_their_own_objects(method, path, gateway, ann_and_her_order):
    ann, ids = ann_and_her_order
    refused = call(gateway, ann, method, path, ids)
    assert refused.status_code == 403, (method, path, refused.status_code, refused.text)


def test_an_admin_passes_the_same_doors(gateway, admin, ann_and_her_order):
    _, ids = ann_and_her_order
    assert call(gateway, admin, "GET", "/api/users", ids).status_code == 200
    assert call(gateway, admin, "GET", "/api/orders/{order_id}", ids).status_code == 200
    assert call(gateway, admin, "GET", "/api/admin/dead-letters", ids).status_code == 200


def test_lists_hold_only_the_callers_own(gateway, new_account, ann_and_her_order):
    ann, ids = ann_and_her_order
    bob = new_account("Bob")
    assert ids["order_id"] in {order["id"] for order in gateway.get("/api/orders", headers=ann.headers).json()["items"]}
    assert ids["order_id"] not in {o["id"] for o in gateway.get("/api/orders", headers=bob.headers).json()["items"]}
    theirs = gateway.get("/api/notifications", headers=bob.headers).json()["items"]
    assert all(n["data"].get("order_id") != ids["order_id"] for n in theirs)
    assert all(n.get("user_id", bob.id) == bob.id for n in theirs)
