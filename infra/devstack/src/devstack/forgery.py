"""Tokens no verifier may accept, made by hand (PyJWT refuses to make some of them):
what the token tables of the gateway's unit tests and the e2e suite forge.

    tampered      a signed token whose payload was changed after signing
    alg_none      an unsigned token ("alg": "none")
    hs256_signed  HS256 with a public key as the secret (the algorithm-confusion attack)
"""

import base64
import hashlib
import hmac
import json
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{_json(claims)}.{signature}"


def alg_none(claims: dict[str, Any], **header: Any) -> str:
    return f"{_json({'alg': 'none', 'typ': 'JWT', **header})}.{_json(claims)}."


def hs256_signed(claims: dict[str, Any], *, secret: bytes, kid: str) -> str:
    signed = f"{_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_json(claims)}"
    return f"{signed}.{_b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())}"
