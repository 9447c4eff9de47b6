"""The gateway's small world.

Upstream          a service behind the gateway: its name, health path, timeout, how many
                  requests it is given at once (its instances' addresses are the
                  adapters' business: static or discovered)
Route             a public method and path, the upstream path it maps to, who may call
Access            public, any signed-in user, or admins only
Principal         the signed-in caller, from a verified access token
RateLimitPolicy   how many requests per window, and the key it counts by
RateDecision      the answer of the limiter for one request
Standing          a signed-in caller's token revoked or not, and the count of the call
origin_allowed    may a page from this Origin open a WebSocket to us
revoked_at        when a user event ends that user's tokens (deleted, suspended, roles changed)
"""

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from gateway.domain.errors import AuthenticationFailed, Forbidden
from interchange_common.actors import SignedInUser

ADMIN_ROLE = "admin"


class Access(Enum):
    PUBLIC = "public"
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Upstream:
    """``audience`` is the service's name, the ``aud`` of the service tokens it accepts.
    ``max_in_flight``: how many requests this gateway instance forwards to it at once;
    the rest wait a moment, then are refused (503). None: no limit.
    ``idempotency_keys``: it answers a request repeated with the same
    ``Idempotency-Key`` with the first one's outcome, so such a request may be sent
    again when its connection dropped before any answer."""

    name: str
    audience: str
    health_path: str = "/health"
    timeout_seconds: float = 5.0
    max_in_flight: int | None = None
    idempotency_keys: bool = False


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


@dataclass(frozen=True, slots=True)
class Standing:
    """A signed-in caller's standing, from one look at the store: is the token revoked,
    and the count of the call. A revoked token's call counts against the client's
    address (guessing costs, as for a bad token); a standing token's against its user,
    unless no policy was given (a caller the route refuses is not counted): then
    ``decision`` is None."""

    revoked: bool
    decision: RateDecision | None


# The signed-in caller, from a verified access token.
Principal = SignedInUser


# Path parameters are copied into upstream paths: only plain segments may pass.
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]{1,128}")  # fullmatch: no trailing newline


@dataclass(frozen=True, slots=True)
class Route:
    """A public ``method path`` served by ``upstream`` at ``target``.

    ``target`` may name the route's path parameters and ``{actor_id}``, the caller's id.
    """

    method: str
    path: str
    upstream: str
    target: str
    access: Access
    rate_limit: str = "default"
    summary: str = ""
    forward_headers: tuple[str, ...] = field(
        default=("content-type", "accept", "if-match", "if-none-match", "idempotency-key")
    )

    def authorize(self, *, principal: Principal | None) -> None:
        """Raise when the caller may not use this route at all (object checks are upstream)."""
        if self.access is Access.PUBLIC:
            return
        if principal is None:
            raise AuthenticationFailed("authentication required")
        if self.access is Access.ADMIN and not principal.is_admin:
            raise Forbidden("admin role required")

    def upstream_path(self, *, path_params: dict[str, str], principal: Principal | None) -> str | None:
        """The upstream path, or None when a path parameter is not a plain segment."""
        values: dict[str, str] = {}
        for name, value in path_params.items():
            if not _SAFE_SEGMENT.fullmatch(value) or value in (".", ".."):
                return None
            values[name] = value
        if principal is not None:
            values["actor_id"] = str(principal.user_id)
        return self.target.format(**values)


def origin_allowed(*, origin: str | None, host: str | None, secure: bool, allowed: Collection[str]) -> bool:
    """Browsers always send ``Origin`` with a WebSocket handshake and any page may open
    one to us (with the user's cookies, though we use none): only listed origins and
    our own pass. No Origin at all is a non-browser client, which proves itself with a
    ticket or token like everyone else."""
    if origin is None:
        return True
    if origin in allowed:
        return True
    return host is not None and origin.lower() == f"{'https' if secure else 'http'}://{host.lower()}"


def revoked_at(event: Mapping[str, Any]) -> float | None:
    """When a user event ends the user's tokens (epoch seconds): a deleted user, one
    no longer active (suspended), or one whose roles changed (tokens carry roles: a
    demoted admin's token must not stay an admin's). Tokens issued at or before that
    time are refused; ones issued after (a new log in) are not. None: the event ends
    nothing (a rename, a new user)."""
    kind, data = event.get("type"), event.get("data") or {}
    if kind not in ("user.deleted", "user.updated"):
        return None
    if kind == "user.updated" and data.get("status", "ACTIVE") == "ACTIVE" and "roles" not in data.get("changed", ()):
        return None
    return datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00")).timestamp()
