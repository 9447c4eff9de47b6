"""Short-lived tokens that one service presents to another.

A token says who calls (``iss`` and ``sub``: the calling service) and whom it is
for (``aud``: the called service). It lives a few minutes, so the issuer keeps one
per audience and renews it before it expires, and the verifier remembers tokens it
has already checked until they expire: neither signs nor verifies on every call.

HS256 with one shared key keeps set-up to one variable; the algorithm is pinned on
both sides, exp, iat, iss and aud are required, and the issuer must be one of the
deployment's services.
"""

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from interchange_common.errors import ServiceAuthError

ALGORITHM = "HS256"
# The services of this deployment: a token from any other issuer is refused.
KNOWN_SERVICES = frozenset({"gateway", "user-service", "order-service", "notification-service", "event-store"})
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
_LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class ServiceCaller:
    """Who called, as proven by a valid service token."""

    service: str
    expires_at: float


class ServiceTokenIssuer:
    """Issues tokens for calls from ``service`` to other services."""

    def __init__(self, *, service: str, secret: str, ttl_seconds: int) -> None:
        self._service = service
        self._secret = secret
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[str, float]] = {}

    def token_for(self, *, audience: str) -> str:
        now = time.time()
        cached = self._cache.get(audience)
        # Renew once a quarter of the lifetime is left, so no call carries a token
        # that expires on the way.
        if cached is not None and cached[1] - now > self._ttl / 4:
            return cached[0]
        expires_at = now + self._ttl
        token = jwt.encode(
            {
                "iss": self._service,
                "sub": self._service,
                "aud": audience,
                "iat": int(now),
                "exp": int(expires_at),
                "jti": uuid.uuid4().hex,
            },
            self._secret,
            algorithm=ALGORITHM,
        )
        self._cache[audience] = (token, expires_at)
        return token

    def authorization_for(self, *, audience: str) -> str:
        return f"Bearer {self.token_for(audience=audience)}"


class ServiceTokenVerifier:
    """Verifies tokens addressed to ``service``; remembers valid ones until they expire."""

    def __init__(
        self, *, service: str, secret: str, callers: frozenset[str] = KNOWN_SERVICES, cache_size: int = 1024
    ) -> None:
        self._service = service
        self._secret = secret
        self._callers = callers
        self._cache: OrderedDict[str, ServiceCaller] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, *, token: str) -> ServiceCaller:
        caller = self._cache.get(token)
        if caller is not None:
            if caller.expires_at > time.time():
                return caller
            del self._cache[token]
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._service,
                leeway=_LEEWAY_SECONDS,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as e:
            raise ServiceAuthError(f"invalid service token: {e}") from e
        if claims["iss"] != claims["sub"]:
            raise ServiceAuthError("invalid service token: iss and sub differ")
        if claims["iss"] not in self._callers:
            raise ServiceAuthError("invalid service token: not from a known service")
        caller = ServiceCaller(service=str(claims["iss"]), expires_at=float(claims["exp"]))
        self._cache[token] = caller
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return caller

    def verify_authorization(self, *, header: str | None) -> ServiceCaller:
        """Verify an ``Authorization: Bearer <token>`` header value."""
        if not header:
            raise ServiceAuthError("service token required")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ServiceAuthError("service token required")
        return self.verify(token=token.strip())
