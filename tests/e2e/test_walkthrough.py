"""The README's walkthrough, step by step: register → token → me → list as admin."""

import uuid


def test_register_log_in_read_me_and_list_as_admin(gateway, admin):
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    registered = gateway.post(
        "/api/auth/register", json={"name": "Ada Lovelace", "email": email, "password": "correct horse battery"}
    )
    assert registered.status_code == 201
    user = registered.json()
    assert set(user) == {"id", "name", "email", "roles", "status", "created_at", "updated_at"}
    assert (user["email"], user["roles"], user["status"]) == (email, ["user"], "ACTIVE")
    assert user["created_at"].endswith("Z")

    token = gateway.post("/api/auth/token", json={"email": email, "password": "correct horse battery"})
    assert token.status_code == 200
    body = token.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0

    me = gateway.get("/api/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json() == user

    listed = gateway.get("/api/users", params={"filter": email}, headers=admin.headers)
    assert listed.status_code == 200
    assert listed.json() == {"items": [user], "total": 1, "page": 1, "limit": 10}


def test_the_jwks_verifies_the_issued_tokens(gateway, new_account):
    import jwt

    account = new_account()
    keys = gateway.get("/.well-known/jwks.json").json()["keys"]
    kid = jwt.get_unverified_header(account.token)["kid"]
    jwk = next(key for key in keys if key["kid"] == kid)
    claims = jwt.decode(
        account.token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="interchange-api", issuer="interchange"
    )
    assert claims["sub"] == account.id
