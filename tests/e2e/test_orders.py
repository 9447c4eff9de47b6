"""Orders through the gateway, as a user would place them (docs/api.md "Orders")."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devstack.testing import wait_for
from interchange_common.servicejwt import ServiceTokenIssuer

ORDER_INSTANCES = ("order-service", "order-service-2")

ITEMS = [{"sku": "BOOK-1", "quantity": 2, "unit_price": "12.50"}, {"sku": "PEN-7", "quantity": 1, "unit_price": 1.2}]


def place(gateway, account, *, items=ITEMS, key=None):
    headers = {**account.headers, **({"Idempotency-Key": key} if key else {})}
    return gateway.post("/api/orders", json={"items": items}, headers=headers)


def listed_once_it_shows(gateway, account, order_id, **params):
    """The caller's order list as soon as it shows ``order_id``: at once when the
    command that placed it answered (it wrote the read model), else once the
    projection, which applies events in order, has reached it."""

    def listing():
        response = gateway.get("/api/orders", params={"limit": 100, **params}, headers=account.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        return body if order_id in {o["id"] for o in body["items"]} else None

    return wait_for(listing, timeout=10, what=f"order {order_id} in the list")


def count_orders(gateway, account) -> int:
    """How many orders the caller has, counted after a barrier order of its own."""
    barrier = place(gateway, account, items=[{"sku": "BARRIER", "quantity": 1, "unit_price": "0"}])
    assert barrier.status_code == 201, barrier.text
    return int(listed_once_it_shows(gateway, account, barrier.json()["id"])["total"]) - 1


def test_an_order_is_placed_read_back_and_listed_newest_first(gateway, new_account):
    me = new_account()
    first = place(gateway, me)
    assert first.status_code == 201, first.text
    order = first.json()
    assert order["status"] == "PLACED"
    assert (order["user_id"], order["total"], order["currency"], order["version"]) == (me.id, "26.20", "EUR", 1)
    assert [item["unit_price"] for item in order["items"]] == ["12.50", "1.20"]
    assert first.headers["etag"] == '"1"'
    assert first.headers["location"] == f"/api/orders/{order['id']}"
    # Read your own write: straight after the command, whatever the projection's lag.
    read = gateway.get(f"/api/orders/{order['id']}", params={"min_version": order["version"]}, headers=me.headers)
    assert read.status_code == 200, read.text
    assert read.json() == order
    assert read.headers["etag"] == '"1"'
    second = place(gateway, me).json()
    listed_once_it_shows(gateway, me, second["id"])
    page = gateway.get("/api/orders", params={"limit": 1}, headers=me.headers).json()
    assert (page["total"], page["limit"], [o["id"] for o in page["items"]]) == (2, 1, [second["id"]])
    rest = gateway.get("/api/orders", params={"limit": 1, "page": 2}, headers=me.headers).json()
    assert [o["id"] for o in rest["items"]] == [order["id"]]


def test_the_same_idempotency_key_gives_one_order(gateway, new_account):
    me = new_account()
    key = f"key-{uuid.uuid4()}"
    answers = [place(gateway, me, key=key) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 200, 200]
    assert len({a.json()["id"] for a in answers}) == 1
    assert count_orders(gateway, me) == 1


def test_the_same_idempotency_key_sent_concurrently_gives_one_order(gateway, new_account):
    me = new_account()
    key = f"key-{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: place(gateway, me, key=key), range(3)))
    assert sorted(a.status_code for a in answers) == [200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert count_orders(gateway, me) == 1


def test_the_same_key_with_another_body_is_refused(gateway, new_account):
    me = new_account()
    assert place(gateway, me, key="k-1").status_code == 201
    refused = place(gateway, me, key="k-1", items=[{"sku": "OTHER", "quantity": 1, "unit_price": "1.00"}])
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "Idempotency-Key" in refused.json()["detail"]
    assert count_orders(gateway, me) == 1


def test_cancel_with_if_match(gateway, new_account, admin):
    me = new_account()
    order = place(gateway, me).json()
    confirmed = gateway.post(f"/api/orders/{order['id']}/confirm", headers={**admin.headers, "If-Match": '"1"'})
    assert (confirmed.status_code, confirmed.json()["status"]) == (200, "CONFIRMED")
    stale = gateway.post(f"/api/orders/{order['id']}/cancel", headers={**me.headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    cancelled = gateway.post(
        f"/api/orders/{order['id']}/cancel",
        headers={**me.headers, "If-Match": confirmed.headers["etag"]},
        json={"reason": "changed my mind"},
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["version"], cancelled.headers["etag"]) == (
        "CANCELLED",
        3,
        '"3"',
    )
    again = gateway.post(f"/api/orders/{order['id']}/cancel", headers=me.headers)
    assert again.status_code == 409
    read = gateway.get(f"/api/orders/{order['id']}", params={"min_version": 3}, headers=me.headers).json()
    assert (read["status"], read["version"]) == ("CANCELLED", 3)


def test_every_command_is_read_back_at_once_in_the_order_and_the_list(gateway, new_account):
    # The projection trails the event store by a few milliseconds: before every
    # command wrote its result to the read model, a read straight after a cancel
    # gave the placed order in 3 to 8 tries of 10. No min_version here.
    me = new_account()
    for _ in range(10):
        order = place(gateway, me).json()
        read = gateway.get(f"/api/orders/{order['id']}", headers=me.headers)
        assert (read.status_code, read.headers["etag"]) == (200, '"1"'), read.text
        cancelled = gateway.post(
            f"/api/orders/{order['id']}/cancel", headers={**me.headers, "If-Match": '"1"'}, json={"reason": "again"}
        )
        assert cancelled.status_code == 200, cancelled.text
        read = gateway.get(f"/api/orders/{order['id']}", headers=me.headers)
        assert (read.status_code, read.headers["etag"]) == (200, '"2"'), read.text
        assert read.json() == cancelled.json()
        newest = gateway.get("/api/orders", params={"limit": 1}, headers=me.headers).json()["items"][0]
        assert (newest["id"], newest["status"], newest["version"]) == (order["id"], "CANCELLED", 2)


def test_a_command_on_one_order_instance_is_read_on_the_other(target, new_account, admin):
    """No per-instance cache can pass this: each command goes to one order-service
    instance and the read straight after it to the other."""
    target.need("ports", "service_jwt_secret")
    me = new_account()
    issuer = ServiceTokenIssuer(service="gateway", secret=target.service_jwt_secret, ttl_seconds=60)
    headers = {"Authorization": f"Bearer {issuer.token_for(audience='order-service')}", "X-Actor-Roles": "user"}
    as_me = {**headers, "X-Actor-Id": me.id}
    as_admin = {**headers, "X-Actor-Id": admin.id, "X-Actor-Roles": "admin,user"}
    first, second = (httpx.Client(base_url=target.ports.url(name, 8002), timeout=10) for name in ORDER_INSTANCES)
    with first, second:
        for writer, reader in ((first, second), (second, first)) * 3:
            order = writer.post("/internal/orders", json={"items": ITEMS}, headers=as_me).json()
            assert reader.get(f"/internal/orders/{order['id']}", headers=as_me).json()["version"] == 1
            confirmed = writer.post(f"/internal/orders/{order['id']}/confirm", headers=as_admin)
            assert confirmed.status_code == 200, confirmed.text
            read = reader.get(f"/internal/orders/{order['id']}", headers=as_me).json()
            assert (read["status"], read["version"]) == ("CONFIRMED", 2)
            writer.post(f"/internal/orders/{order['id']}/cancel", headers=as_me).raise_for_status()
            listed = reader.get("/internal/orders", params={"limit": 1}, headers=as_me).json()["items"][0]
            assert (listed["id"], listed["status"], listed["version"]) == (order["id"], "CANCELLED", 3)


def test_a_version_the_order_does_not_have_is_a_412_not_an_older_order(gateway, new_account):
    me, stranger = new_account(), new_account()
    order = place(gateway, me).json()
    ahead = gateway.get(f"/api/orders/{order['id']}", params={"min_version": 5}, headers=me.headers)
    assert ahead.status_code == 412, ahead.text
    assert ahead.headers["content-type"].startswith("application/problem+json")
    assert "version 1" in ahead.json()["detail"]
    assert "etag" not in ahead.headers
    hidden = gateway.get(f"/api/orders/{order['id']}", params={"min_version": 5}, headers=stranger.headers)
    assert hidden.status_code == 404
    reached = gateway.get(f"/api/orders/{order['id']}", params={"min_version": 1}, headers=me.headers)
    assert (reached.status_code, reached.json()["version"]) == (200, 1)


def test_the_walkthroughs_cancel_sent_twice_is_a_412_and_without_if_match_a_409(gateway, new_account):
    me = new_account()
    order = place(gateway, me).json()
    walkthrough_cancel = {**me.headers, "If-Match": '"1"'}
    url = f"/api/orders/{order['id']}/cancel"
    assert gateway.post(url, headers=walkthrough_cancel, json={"reason": "changed my mind"}).status_code == 200
    again = gateway.post(url, headers=walkthrough_cancel, json={"reason": "changed my mind"})
    assert again.status_code == 412, again.text
    assert "version 2" in again.json()["detail"]
    assert gateway.post(url, headers=me.headers).status_code == 409


def test_the_event_history_is_oldest_first(gateway, new_account):
    me = new_account()
    order = place(gateway, me).json()
    gateway.post(f"/api/orders/{order['id']}/cancel", headers=me.headers, json={"reason": "test"})
    history = gateway.get(f"/api/orders/{order['id']}/events", headers=me.headers)
    assert history.status_code == 200, history.text
    events = history.json()
    assert [(e["type"], e["version"]) for e in events] == [("order.placed", 1), ("order.cancelled", 2)]
    assert events[0]["data"]["total"] == "26.20"
    assert events[1]["data"]["reason"] == "test"
    assert events[0]["metadata"]["correlation_id"]


def test_another_users_order_is_not_found(gateway, new_account):
    owner, stranger = new_account(), new_account()
    order = place(gateway, owner).json()
    for method, path in [
        ("GET", f"/api/orders/{order['id']}"),
        ("GET", f"/api/orders/{order['id']}/events"),
        ("POST", f"/api/orders/{order['id']}/cancel"),
    ]:
        assert gateway.request(method, path, headers=stranger.headers).status_code == 404, path
    assert count_orders(gateway, stranger) == 0
    read = gateway.get(f"/api/orders/{order['id']}", headers=owner.headers).json()
    assert read["status"] == "PLACED"


def test_only_admins_move_orders_along(gateway, new_account):
    me = new_account()
    order = place(gateway, me).json()
    assert gateway.post(f"/api/orders/{order['id']}/confirm", headers=me.headers).status_code == 403
    assert gateway.post(f"/api/orders/{order['id']}/ship", headers=me.headers).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"sku": "A", "quantity": 0, "unit_price": "1.00"}]},
        {"items": [{"sku": "A", "quantity": -1, "unit_price": "1.00"}]},
        {"items": [{"sku": "A", "quantity": 1, "unit_price": "-0.01"}]},
        {"items": [{"sku": "A", "quantity": 1, "unit_price": "0.001"}]},
        {"items": [{"sku": "A", "quantity": 1, "unit_price": "NaN"}]},
        {"items": [{"sku": "A", "quantity": "two", "unit_price": "1.00"}]},
        {"items": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}] * 101},
        {"items": []},
        {"items": [{"sku": "A", "quantity": 1, "unit_price": "1.00", "discount": "1.00"}]},
        {"items": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}], "user_id": str(uuid.uuid4())},
        {"items": [{"sku": "", "quantity": 1, "unit_price": "1.00"}]},
        {},
    ],
    ids=[
        "zero-quantity",
        "negative-quantity",
        "negative-price",
        "fractions-of-a-cent",
        "nan-price",
        "quantity-not-a-number",
        "101-items",
        "no-items",
        "unknown-item-field",
        "unknown-field",
        "empty-sku",
        "no-body",
    ],
)
def test_bad_orders_are_refused_and_change_nothing(gateway, new_account, body):
    me = new_account()
    refused = gateway.post("/api/orders", json=body, headers=me.headers)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert count_orders(gateway, me) == 0


def test_bad_order_ids_and_if_match_are_clear_errors(gateway, new_account):
    me = new_account()
    assert gateway.get("/api/orders/not-a-uuid", headers=me.headers).status_code == 404
    assert gateway.get(f"/api/orders/{uuid.uuid4()}", headers=me.headers).status_code == 404
    order = place(gateway, me).json()
    bad = gateway.post(f"/api/orders/{order['id']}/cancel", headers={**me.headers, "If-Match": "yesterday"})
    assert bad.status_code == 422
    read = gateway.get(f"/api/orders/{order['id']}", headers=me.headers).json()
    assert read["status"] == "PLACED"


def test_orders_need_a_signed_in_user(gateway):
    assert gateway.post("/api/orders", json={"items": ITEMS}).status_code == 401
    assert gateway.get("/api/orders").status_code == 401
