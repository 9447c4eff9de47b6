"""Single-use tickets for browsers, which cannot put an access token in a header of
an EventSource or a WebSocket (and must not put it in a URL).

A ticket is 32 random bytes, shown to its holder once. Redis keeps only its SHA-256
under ``{prefix}:ticket:{hex}`` with the caller's id and roles and the expiry and
issue time of the access token it was issued against (the connection it opens ends
when that token expires or is revoked), for a few seconds (``SET ... EX``);
redeeming it is one ``GETDEL``, so two redemptions of one ticket cannot both
succeed, on any number of gateway instances.
"""

import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from redis.exceptions import RedisError

from gateway.domain.errors import AuthenticationFailed, StoreUnavailable
from gateway.domain.model import Principal


class TicketRedis(Protocol):
    """The two commands of redis.asyncio.Redis the store uses (a fake in unit tests)."""

    def set(self, name: str, value: bytes, /, *, ex: int) -> Awaitable[object]: ...

    def getdel(self, name: str, /) -> Awaitable[bytes | str | None]: ...


class RedisTicketStore:
    def __init__(
        self,
        *,
        redis: TicketRedis,
        key_prefix: str,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._ttl = ttl_seconds
        self._clock = clock

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    def key_for(self, *, ticket: str) -> str:
        return f"{self._prefix}:ticket:{hashlib.sha256(ticket.encode()).hexdigest()}"

    async def issue(self, *, principal: Principal) -> str:
        """A new ticket for ``principal``, valid ``ttl_seconds`` and once."""
        ticket = secrets.token_urlsafe(32)
        value = orjson.dumps(
            {
                "user_id": str(principal.user_id),
                "roles": sorted(principal.roles),
                "expires_at": principal.expires_at,
                "issued_at": principal.issued_at,
            }
        )
        try:
            await self._redis.set(self.key_for(ticket=ticket), value, ex=self._ttl)
        except RedisError as e:
            raise StoreUnavailable("the ticket store is unavailable") from e
        return ticket

    async def redeem(self, *, ticket: str) -> Principal:
        """The caller the ticket was issued to; the ticket is gone afterwards."""
        if not ticket or len(ticket) > 128:
            raise AuthenticationFailed("invalid ticket")
        try:
            value = await self._redis.getdel(self.key_for(ticket=ticket))
        except RedisError as e:
            raise StoreUnavailable("the ticket store is unavailable") from e
        if value is None:
            raise AuthenticationFailed("invalid, used or expired ticket")
        try:
            record = orjson.loads(value)
            principal = Principal(
                user_id=uuid.UUID(record["user_id"]),
                roles=frozenset(str(role) for role in record["roles"]),
                expires_at=float(record["expires_at"]),
                issued_at=float(record["issued_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise AuthenticationFailed("invalid ticket") from e
        if principal.expires_at <= self._clock():
            raise AuthenticationFailed("the access token behind the ticket has expired")
        return principal
