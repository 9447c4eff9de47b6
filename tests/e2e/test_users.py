"""Users through the gateway: who may see and change whom."""

import uuid


def test_a_user_sees_themselves_but_another_user_is_not_found(gateway, new_account, admin):
    ada, grace = new_account(), new_account()
    assert gateway.get(f"/api/users/{ada.id}", headers=ada.headers).status_code == 200
    hidden = gateway.get(f"/api/users/{grace.id}", headers=ada.headers)
    assert hidden.status_code == 404
    assert hidden.json() == gateway.get(f"/api/users/{uuid.uuid4()}", headers=ada.headers).json() | {
        "request_id": hidden.json()["request_id"]
    }
    assert gateway.get(f"/api/users/{grace.id}", headers=admin.headers).status_code == 200


def test_listing_users_is_for_admins(gateway, new_account):
    response = gateway.get("/api/users", headers=new_account().headers)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


def test_a_user_renames_themselves_but_cannot_promote_themselves(gateway, new_account):
    ada = new_account()
    renamed = gateway.patch(f"/api/users/{ada.id}", json={"name": "Ada King"}, headers=ada.headers)
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Ada King"
    assert renamed.json()["updated_at"] > renamed.json()["created_at"]
    promoted = gateway.patch(f"/api/users/{ada.id}", json={"roles": ["admin", "user"]}, headers=ada.headers)
    assert promoted.status_code == 403
    assert gateway.get("/api/users/me", headers=ada.headers).json()["roles"] == ["user"]


def test_a_user_cannot_change_or_delete_another(gateway, new_account):
    ada, grace = new_account(), new_account()
    assert gateway.patch(f"/api/users/{grace.id}", json={"name": "x"}, headers=ada.headers).status_code == 404
    assert gateway.delete(f"/api/users/{grace.id}", headers=ada.headers).status_code == 404
    assert gateway.get("/api/users/me", headers=grace.headers).json()["name"] == "E2E User"


def test_an_admin_suspends_a_user_who_then_cannot_log_in(gateway, new_account, admin):
    ada = new_account()
    suspended = gateway.patch(f"/api/users/{ada.id}", json={"status": "SUSPENDED"}, headers=admin.headers)
    assert suspended.json()["status"] == "SUSPENDED"
    refused = gateway.post("/api/auth/token", json={"email": ada.email, "password": ada.password})
    assert refused.status_code == 401


def test_a_user_deletes_themselves(gateway, new_account):
    ada = new_account()
    assert gateway.delete(f"/api/users/{ada.id}", headers=ada.headers).status_code == 204
    # Gone (404), or already refused: the deletion revokes the token (test_revocation.py).
    assert gateway.get("/api/users/me", headers=ada.headers).status_code in (401, 404)
    assert gateway.post("/api/auth/token", json={"email": ada.email, "password": ada.password}).status_code == 401


def test_the_filter_is_literal_and_case_insensitive(gateway, admin, new_account):
    tag = uuid.uuid4().hex[:8]
    exact = new_account(name=f"50%_off {tag}")
    new_account(name=f"50XYoff {tag}")
    found = gateway.get("/api/users", params={"filter": f"50%_OFF {tag}"}, headers=admin.headers).json()
    assert [item["id"] for item in found["items"]] == [exact.id]


def test_pages_and_the_limit_cap(gateway, admin, new_account):
    tag = uuid.uuid4().hex[:8]
    for _ in range(3):
        new_account(name=f"Pager {tag}")
    page = gateway.get("/api/users", params={"filter": f"pager {tag}", "page": 2, "limit": 2}, headers=admin.headers)
    assert page.json()["total"] == 3
    assert len(page.json()["items"]) == 1
    capped = gateway.get("/api/users", params={"limit": 1000}, headers=admin.headers).json()
    assert capped["limit"] == 100


def test_identity_headers_from_a_client_are_not_trusted(gateway, new_account, admin):
    ada, grace = new_account(), new_account()
    smuggled = {**ada.headers, "X-Actor-Id": admin.id, "X-Actor-Roles": "admin,user"}
    assert gateway.get(f"/api/users/{grace.id}", headers=smuggled).status_code == 404
    assert gateway.patch(f"/api/users/{ada.id}", json={"roles": ["admin"]}, headers=smuggled).status_code == 403


def test_a_wrong_method_is_a_405_problem(gateway, new_account):
    response = gateway.put("/api/users/me", json={}, headers=new_account().headers)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


def test_names_keep_their_joiners_from_registration_to_renaming(gateway, new_account):
    # U+200D joins an emoji sequence, U+200C keeps Persian letters apart: format
    # characters, not controls, and names need them.
    coder = "Ada\u200d👩\u200d💻 Lovelace"
    ada = new_account(coder)
    assert gateway.get("/api/users/me", headers=ada.headers).json()["name"] == coder
    persian = "مهرداد\u200cزاده"  # noqa: RUF001  # Persian letters, on purpose
    renamed = gateway.patch(f"/api/users/{ada.id}", json={"name": persian}, headers=ada.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == persian
    assert gateway.get("/api/users/me", headers=ada.headers).json()["name"] == persian
