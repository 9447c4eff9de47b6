"""Bad input of every shape: a clear 4xx problem, never a 500, and nothing changes."""

import time
import uuid

import jwt
import pytest

from devstack.testing import assert_problem


@pytest.fixture
def user_count(gateway, admin):
    def count() -> int:
        return int(gateway.get("/api/users", headers=admin.headers).json()["total"])

    return count


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"name": "x", "email": ', 422),
        (b'{"name": 5, "email": "a@example.com", "password": "long enough"}', 422),
        (b'{"name": "x", "email": "not-an-email", "password": "long enough"}', 422),
        (b'{"name": "x", "email": "a@example.com", "password": "short"}', 422),
        (b'{"name": "x", "email": "a@example.com", "password": "long enough", "roles": ["admin"]}', 422),
        (b"[]", 422),
        (b"null", 422),
        (b'{"name": "' + b"x" * 200_000 + b'"}', 413),
    ],
    ids=["malformed", "wrong-type", "bad-email", "weak-password", "roles-smuggled", "array", "null", "huge"],
)
def test_bad_registrations_change_nothing(gateway, user_count, content, status):
    before = user_count()
    response = gateway.post("/api/auth/register", content=content, headers={"content-type": "application/json"})
    assert_problem(response, status)
    assert user_count() == before


def test_a_taken_email_is_409_in_any_case(gateway, new_account, user_count):
    ada = new_account()
    before = user_count()
    response = gateway.post(
        "/api/auth/register", json={"name": "Copy", "email": ada.email.upper(), "password": "long enough"}
    )
    assert_problem(response, 409)
    assert user_count() == before


@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "not-a-uuid", "0", "%00", "..%2F.."])
def test_unknown_ids_are_404(gateway, admin, user_id):
    assert_problem(gateway.get(f"/api/users/{user_id}", headers=admin.headers), 404)


@pytest.mark.parametrize("slash", ["%2F", "%2f"])
def test_an_encoded_slash_is_never_a_separator(gateway, new_account, slash):
    me = new_account()
    placed = gateway.post(
        "/api/orders", json={"items": [{"sku": "SLASH-1", "quantity": 1, "unit_price": "3.00"}]}, headers=me.headers
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    # One segment, the order id "<id>/cancel": a path that takes GET only, like any other order id.
    assert_problem(gateway.post(f"/api/orders/{order_id}{slash}cancel", headers=me.headers), 405)
    assert_problem(gateway.get(f"/api/orders/{order_id}{slash}events", headers=me.headers), 404)
    assert_problem(gateway.get(f"/api{slash}users{slash}me", headers=me.headers), 404)
    with gateway.stream("GET", f"/api{slash}events", headers=me.headers) as live:
        assert live.status_code == 404
    history = gateway.get(f"/api/orders/{order_id}/events", headers=me.headers)
    assert [event["type"] for event in history.json()] == ["order.placed"]
    assert gateway.get(f"/api/orders/{order_id}", headers=me.headers).json()["status"] == "PLACED"


def test_bad_credentials_are_401(gateway, new_account):
    ada = new_account()
    assert_problem(gateway.post("/api/auth/token", json={"email": ada.email, "password": "wrong password"}), 401)
    assert_problem(gateway.post("/api/auth/token", json={"email": "nobody@example.com", "password": "x" * 10}), 401)


def test_missing_and_tampered_tokens_are_401(gateway, new_account):
    ada = new_account()
    header, payload, signature = ada.token.split(".")
    forged = f"{header}.{payload[:-4]}AAAA.{signature}"
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {forged}"},
    ):
        assert_problem(gateway.get("/api/users/me", headers=headers), 401)


def test_an_expired_token_is_401(gateway, target, new_account):
    target.need("signing_key")
    ada = new_account()
    claims = jwt.decode(ada.token, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    kid = jwt.get_unverified_header(ada.token)["kid"]
    expired = jwt.encode(claims, target.signing_key.read_bytes(), algorithm="RS256", headers={"kid": kid})
    assert_problem(gateway.get("/api/users/me", headers={"Authorization": f"Bearer {expired}"}), 401)


def test_a_bad_patch_changes_nothing(gateway, new_account):
    ada = new_account()
    before = gateway.get("/api/users/me", headers=ada.headers).json()
    for body in ({"email": "nope"}, {"status": "BANNED"}, {"name": ""}, {"unknown": 1}, {"name": 7}):
        assert_problem(gateway.patch(f"/api/users/{ada.id}", json=body, headers=ada.headers), 422)
    assert gateway.get("/api/users/me", headers=ada.headers).json() == before


@pytest.mark.parametrize(
    "name",
    ["Ada \u202eecalevoL", "Ada\u2066 Lovelace", "Ada\nBcc: x@example.com", "Ada\u2028Lovelace"],
    ids=["right-to-left-override", "isolate", "line-feed", "line-separator"],
)
def test_a_name_that_could_break_or_reorder_a_line_is_a_422_and_changes_nothing(gateway, new_account, user_count, name):
    ada = new_account()
    before, users = gateway.get("/api/users/me", headers=ada.headers).json(), user_count()
    registered = gateway.post(
        "/api/auth/register", json={"name": name, "email": f"{uuid.uuid4().hex}@example.com", "password": "long enough"}
    )
    assert "bidirectional overrides" in assert_problem(registered, 422)["detail"]
    renamed = gateway.patch(f"/api/users/{ada.id}", json={"name": name}, headers=ada.headers)
    assert "bidirectional overrides" in assert_problem(renamed, 422)["detail"]
    assert gateway.get("/api/users/me", headers=ada.headers).json() == before
    assert user_count() == users


def test_an_unknown_route_is_a_404_problem(gateway):
    assert_problem(gateway.get("/api/nothing-here"), 404)


def test_an_oversized_header_is_refused_and_the_gateway_keeps_serving(gateway, new_account):
    ada = new_account()
    status = gateway.get("/api/users/me", headers={**ada.headers, "X-Filler": "x" * 32_768}).status_code
    assert status == 431
    assert gateway.get("/api/users/me", headers=ada.headers).status_code == 200
