"""Access tokens: RS256 JWTs with a ``kid``, and the JWKS that verifies them.

The signing key is read from a PEM file (never from the image). Its ``kid`` is the
RFC 7638 thumbprint of the public key, so the same key always has the same id and
a verifier can tell a new key from an old one.

Rotation, in three restarts of user-service (JWT_VERIFY_ONLY_KEY_FILES lists keys
published in the JWKS but never signed with; private or public PEMs):
1. publish the next key: JWT_VERIFY_ONLY_KEY_FILES=[next] (with several instances,
   every verifier then knows it before any token carries it);
2. sign with it: JWT_PRIVATE_KEY_FILE=next, JWT_VERIFY_ONLY_KEY_FILES=[old], so
   tokens the old key signed still verify;
3. once those have expired (the access-token lifetime), drop the old key.
"""

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from user_service.domain.model import User

ALGORITHM = "RS256"


class SigningKeyError(Exception):
    """The signing key file is missing or is not an RSA private key."""


def load_private_key(*, path: Path) -> RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise SigningKeyError(f"cannot load the signing key from {path}") from e
    if not isinstance(key, RSAPrivateKey):
        raise SigningKeyError(f"{path} does not hold an RSA private key")
    return key


def load_public_key(*, path: Path) -> RSAPublicKey:
    """The public half of the key in ``path`` (a private or a public PEM)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SigningKeyError(f"cannot read the key in {path}") from e
    if b"PRIVATE KEY" in data:
        return load_private_key(path=path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"cannot load a public key from {path}") from e
    if not isinstance(key, RSAPublicKey):
        raise SigningKeyError(f"{path} does not hold an RSA key")
    return key


def public_jwk(*, key: RSAPublicKey) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk.update({"kid": _thumbprint(jwk), "use": "sig", "alg": ALGORITHM})
    return jwk


def _thumbprint(jwk: dict[str, Any]) -> str:
    members = {name: jwk[name] for name in ("e", "kty", "n")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class RsaAccessTokenIssuer:
    def __init__(
        self,
        *,
        key: RSAPrivateKey,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        verify_only: Sequence[RSAPublicKey] = (),
    ) -> None:
        self._key = key
        self._jwk = public_jwk(key=key.public_key())
        # Published, never signed with: the keys being rotated in or out.
        self._verify_only = [
            jwk for jwk in (public_jwk(key=other) for other in verify_only) if jwk["kid"] != self._jwk["kid"]
        ]
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds

    @property
    def kid(self) -> str:
        return str(self._jwk["kid"])

    def issue(self, *, user: User) -> tuple[str, int]:
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user.id),
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
            "roles": list(user.roles),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return token, self._ttl

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk, *self._verify_only]}
