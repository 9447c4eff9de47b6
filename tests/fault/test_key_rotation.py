"""Rotating the access-token signing key on a running stack (issue 7).

user-service restarts signing with a new key and still publishing the old one
(JWT_VERIFY_ONLY_KEY_FILES): a token signed before keeps working at the gateway and on
the TCP feed, a new log in gets a token with the new kid, and that works too, with
the gateway fetching the key set again when it meets the new kid.
"""

import json
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.accounts import login, register
from devstack.liveclients import Terminal
from devstack.shop import USER_INSTANCES, Shop


def new_key_file(directory: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "jwt-private-next.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def signed_in_on_the_feed(shop: Shop, token: str) -> bool:
    terminal = Terminal(shop.stack.port("notification-service", 9000))
    try:
        assert terminal.receive()["type"] == "welcome"
        terminal.send({"type": "auth", "token": token})
        return terminal.receive()["type"] == "authenticated"
    finally:
        terminal.close()


def test_a_key_rotation_keeps_old_tokens_working_and_signs_new_ones_with_the_new_key(shop: Shop, tmp_path):
    account = register(shop.gateway, name="Rotation")
    old_token = account.token
    assert shop.gateway.get("/api/users/me", headers=account.headers).status_code == 200
    assert signed_in_on_the_feed(shop, old_token)
    old_key_file = Path(shop.stack.environment("user-service")["JWT_PRIVATE_KEY_FILE"])

    rotated = {
        "JWT_PRIVATE_KEY_FILE": str(new_key_file(tmp_path)),
        "JWT_VERIFY_ONLY_KEY_FILES": json.dumps([str(old_key_file)]),
    }
    for instance in USER_INSTANCES:  # one at a time, as a rolling restart does
        shop.stack.native.restart(instance, environment=rotated)
    published = {key["kid"] for key in shop.gateway.get("/.well-known/jwks.json").json()["keys"]}
    new_token = login(shop.gateway, email=account.email, password=account.password)

    assert kid_of(new_token) != kid_of(old_token)
    assert published == {kid_of(old_token), kid_of(new_token)}
    for token in (old_token, new_token):
        me = shop.gateway.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, (kid_of(token), me.text)
        assert me.json()["id"] == account.id
        assert signed_in_on_the_feed(shop, token)

    for instance in USER_INSTANCES:  # back to the stack's own key for the tests after
        shop.stack.native.restart(instance)
