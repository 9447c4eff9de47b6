"""The gateway's access-token check: one table of tokens that must be refused."""

import asyncio
import time
import uuid
from datetime import datetime, tzinfo
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.forgery import hs256_signed, tampered
from gateway.adapters.tokens import JwksTokenVerifier
from gateway.domain.errors import AuthenticationFailed

ISSUER, AUDIENCE = "interchange", "interchange-api"


class KeyRing:
    """Signing keys and the JWKS document a fake user-service would publish."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[dict[str, Any]] = []
        self.fetches = 0

    def add(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.published.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return key

    async def fetch(self) -> dict[str, Any]:
        self.fetches += 1
        return {"keys": list(self.published)}

    def sign(self, kid: str = "k1", headers: dict[str, str] | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": now, "exp": now + 600}
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid, **(headers or {})})


@pytest.fixture
async def ring() -> KeyRing:
    ring = KeyRing()
    ring.add("k1")
    return ring


@pytest.fixture
async def verifier(ring: KeyRing) -> JwksTokenVerifier:
    verifier = JwksTokenVerifier(fetch_jwks=ring.fetch, issuer=ISSUER, audience=AUDIENCE, leeway_seconds=5)
    await verifier.refresh()
    return verifier


def hs256_with_public_key(ring: KeyRing) -> str:
    public_pem = (
        ring.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": now, "exp": now + 600}
    return hs256_signed(body, secret=public_pem, kid="k1")


BAD_TOKENS = {
    "alg-none": lambda ring: jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": 0, "exp": 2**40},
        "",
        algorithm="none",
        headers={"kid": "k1"},
    ),
    "hs256-with-the-public-key": hs256_with_public_key,
    "no-exp": lambda ring: ring.sign(exp=None),
    "expired": lambda ring: ring.sign(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "iat-in-the-future": lambda ring: ring.sign(iat=int(time.time()) + 3600),
    "no-iat": lambda ring: ring.sign(iat=None),
    "wrong-aud": lambda ring: ring.sign(aud="another-api"),
    "no-aud": lambda ring: ring.sign(aud=None),
    "wrong-iss": lambda ring: ring.sign(iss="someone-else"),
    "no-sub": lambda ring: ring.sign(sub=None),
    "sub-not-a-user-id": lambda ring: ring.sign(sub="gateway"),
    "unknown-kid": lambda ring: jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "iat": int(time.time()), "exp": 2**40},
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": "made-up"},
    ),
    "tampered-payload": lambda ring: tampered(ring.sign(), roles=["admin"]),
    "service-token": lambda ring: jwt.encode(
        {"iss": "order-service", "sub": "order-service", "aud": "user-service", "iat": 0, "exp": 2**40},
        "s" * 40,
        algorithm="HS256",
    ),
    "garbage": lambda ring: "not.a.token",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused(ring, verifier, kind):
    with pytest.raises(AuthenticationFailed):
        await verifier.verify(token=BAD_TOKENS[kind](ring))


async def test_a_good_token_gives_the_principal(ring, verifier):
    user_id = uuid.uuid4()
    principal = await verifier.verify(token=ring.sign(sub=str(user_id), roles=["user", "admin"]))
    assert principal.user_id == user_id
    assert principal.is_admin


@pytest.mark.parametrize("header", [None, "", "Token x", "Bearer "])
async def test_missing_authorization_is_refused(verifier, header):
    with pytest.raises(AuthenticationFailed, match="required"):
        await verifier.verify_authorization(header=header)


async def test_a_rotated_key_is_fetched_and_the_old_key_keeps_working(ring, verifier):
    old_token = ring.sign("k1")
    ring.add("k2")
    verifier._last_refresh = float("-inf")
    assert (await verifier.verify(token=ring.sign("k2"))).user_id
    assert (await verifier.verify(token=old_token)).user_id
    assert ring.fetches == 2


async def test_unknown_kids_do_not_trigger_a_fetch_each(ring):
    verifier = JwksTokenVerifier(fetch_jwks=ring.fetch, issuer=ISSUER, audience=AUDIENCE, refresh_interval_seconds=3600)
    await verifier.refresh()
    for _ in range(20):
        with pytest.raises(AuthenticationFailed):
            await verifier.verify(token=BAD_TOKENS["unknown-kid"](ring))
    assert ring.fetches == 1


async def test_a_remembered_token_is_refused_once_it_expires(ring, verifier, monkeypatch):
    issued = int(time.time())
    token = ring.sign(iat=issued, exp=issued + 60)
    assert (await verifier.verify(token=token)).user_id
    assert token in verifier._cache
    # An hour later the cached answer must not be reused: the token has expired.
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _FrozenDatetime(later), raising=False)
    with pytest.raises(AuthenticationFailed):
        await verifier.verify(token=token)
    assert token not in verifier._cache


class _FrozenDatetime:
    """PyJWT reads the clock through datetime.now(tz=...): a stand-in that says ``at``."""

    def __init__(self, at: float) -> None:
        self._real = datetime
        self._at = at

    def now(self, tz: tzinfo | None = None) -> datetime:
        return self._real.fromtimestamp(self._at, tz)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_a_failing_jwks_fetch_keeps_the_known_keys(ring, verifier):
    async def broken():
        raise ConnectionError

    token = ring.sign()
    verifier._fetch_jwks = broken
    await verifier.refresh()
    assert (await verifier.verify(token=token)).user_id


async def test_checks_that_arrive_during_the_first_fetch_wait_for_it(ring):
    """No keys yet (nothing fetched at start-up): the first check fetches, and those
    that arrive meanwhile wait for that fetch instead of being refused."""
    released = asyncio.Event()

    async def slow_fetch():
        await released.wait()
        return await ring.fetch()

    verifier = JwksTokenVerifier(fetch_jwks=slow_fetch, issuer=ISSUER, audience=AUDIENCE)
    checks = [asyncio.create_task(verifier.verify_authorization(header=f"Bearer {ring.sign()}")) for _ in range(3)]
    await asyncio.sleep(0)  # let them all start: the first is fetching, the others wait
    released.set()
    principals = await asyncio.gather(*checks)
    assert len(principals) == 3
    assert ring.fetches == 1
