"""Users' access tokens, verified against the keys user-service publishes (JWKS):
by the gateway for every request, and by services that users reach directly (the
raw TCP and UDP feeds).

The algorithm is pinned to RS256; exp, iat, iss, aud and sub are required. Keys are
fetched at start and again when a token names a ``kid`` we do not know (a key
rotation), at most once per ``refresh_interval``, so a flood of made-up kids cannot
turn into a flood of JWKS fetches. A token that verified once is remembered until
it expires: the gateway does not redo RSA work on every request.
"""

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from interchange_common.actors import SignedInUser
from interchange_common.errors import InterchangeCommonError

# The longest an access token may live (user-service's ACCESS_TOKEN_TTL_SECONDS): a
# revocation must be remembered at least this long to outlive every token it ends.
MAX_ACCESS_TOKEN_TTL_SECONDS = 86_400

ALGORITHM = "RS256"
_REQUIRED = ["exp", "iat", "iss", "aud", "sub"]
_log = logging.getLogger(__name__)

JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]


class AccessTokenRejected(InterchangeCommonError):
    """The token is missing, malformed, expired, or not signed by a published key."""


class AccessTokenVerifier:
    def __init__(
        self,
        *,
        fetch_jwks: JwksFetcher,
        issuer: str,
        audience: str,
        leeway_seconds: int = 30,
        refresh_interval_seconds: float = 1.0,
        cache_size: int = 10_000,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._refresh_interval = refresh_interval_seconds
        self._keys: dict[str, Any] = {}
        self._last_refresh = float("-inf")
        self._refresh_lock = asyncio.Lock()
        self._cache: OrderedDict[str, SignedInUser] = OrderedDict()
        self._cache_size = cache_size

    async def refresh(self) -> None:
        """Fetch the key set now; keeps the old keys if user-service does not answer."""
        async with self._refresh_lock:
            await self._fetch()

    async def _fetch(self) -> None:
        self._last_refresh = time.monotonic()
        try:
            document = await self._fetch_jwks()
            keys = {jwk["kid"]: jwt.PyJWK(jwk).key for jwk in document["keys"] if jwk.get("kid")}
        except Exception as e:  # the next unknown kid retries; known keys keep working
            _log.warning("jwks refresh failed", extra={"error": type(e).__name__})
            return
        self._keys = keys

    async def _key_for(self, *, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is None:
            # Under the lock: a check that arrives while another one's fetch is under
            # way waits for that fetch instead of being refused for want of keys.
            async with self._refresh_lock:
                key = self._keys.get(kid)
                if key is None and time.monotonic() - self._last_refresh >= self._refresh_interval:
                    await self._fetch()
                    key = self._keys.get(kid)
        if key is None:
            raise AccessTokenRejected("token signed by an unknown key")
        return key

    async def verify(self, *, token: str) -> SignedInUser:
        user = self._cache.get(token)
        if user is not None:
            if user.expires_at + self._leeway > time.time():
                return user
            del self._cache[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AccessTokenRejected("malformed token") from e
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise AccessTokenRejected("token must be RS256 with a kid")
        key = await self._key_for(kid=header["kid"])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED},
            )
            user_id = uuid.UUID(str(claims["sub"]))
        except (jwt.PyJWTError, ValueError) as e:
            raise AccessTokenRejected("invalid token") from e
        roles = claims.get("roles", [])
        user = SignedInUser(
            user_id=user_id,
            roles=frozenset(role for role in roles if isinstance(role, str))
            if isinstance(roles, list)
            else frozenset(),
            expires_at=float(claims["exp"]),
            issued_at=float(claims["iat"]),
        )
        self._cache[token] = user
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return user

    async def verify_authorization(self, *, header: str | None) -> SignedInUser:
        if not header:
            raise AccessTokenRejected("authentication required")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessTokenRejected("authentication required")
        return await self.verify(token=token.strip())
