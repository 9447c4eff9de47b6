"""Users whose tokens stop working before they expire (deleted, suspended, roles
changed): one mark per user in Redis, "tokens issued at or before this time are
refused", kept as long as a token can live, and announced on a channel as it is
written, so that live connections opened before it end at once.

    <prefix>:revoked:<user>   the mark, epoch seconds (a later one wins)
    <prefix>:revocations      channel: "<user> <mark>" each time a mark is written,
                              in the same script as the SET: no mark goes unannounced

The gateway writes the marks (from user events) and checks them on every request;
notification-service checks them when a feed signs in and listens on the channel to
end the live connections (WebSocket, SSE, TCP, UDP) of a revoked token.
"""

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from interchange_common.errors import InterchangeCommonError

_log = logging.getLogger("interchange.revocations")

# KEYS[1] the user's mark. ARGV: time (epoch seconds), ttl in seconds, channel, user id.
# Keeps the later of two marks (events may arrive out of order), always sets the
# expiry, and announces the mark it keeps.
_REVOKE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = tonumber(ARGV[1])
if at < current then at = current end
local mark = string.format('%.3f', at)
redis.call('SET', KEYS[1], mark, 'EX', tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. mark)
return 1
"""


class MalformedRevocation(InterchangeCommonError):
    """A message on the revocations channel is not "<user id> <epoch seconds>"."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """Tokens of ``user_id`` issued at or before ``at`` (epoch seconds) are refused."""

    user_id: uuid.UUID
    at: float

    @classmethod
    def parse(cls, data: bytes) -> "Revocation":
        """One announcement from the channel, or MalformedRevocation."""
        try:
            user, at = data.split(b" ")
            return cls(user_id=uuid.UUID(user.decode()), at=float(at))
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedRevocation("a revocation is '<user id> <epoch seconds>'") from e


class RedisRevocations:
    def __init__(self, *, redis: Redis, key_prefix: str, ttl_seconds: int = 3600) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._ttl = ttl_seconds
        self._revoke = redis.register_script(_REVOKE)
        self.channel = f"{key_prefix}:revocations".encode()

    def mark_key(self, *, user_id: uuid.UUID) -> str:
        """The key of the user's mark (for a script that reads it with other keys)."""
        return f"{self._prefix}:revoked:{user_id}"

    def not_checked(self, *, error: RedisError) -> None:
        """Log a token let through unchecked because Redis did not answer: the policy of
        ``is_revoked``, for callers that read the mark in a script of their own."""
        _log.warning("revocations unavailable, token not checked", extra={"error": type(error).__name__})

    async def revoke(self, *, user_id: uuid.UUID, at: float) -> None:
        await self._revoke(keys=[self.mark_key(user_id=user_id)], args=[at, self._ttl, self.channel, str(user_id)])

    async def revoked_since(self, *, user_id: uuid.UUID) -> float | None:
        """Tokens issued at or before this time are refused; None: none are."""
        value = await self._redis.get(self.mark_key(user_id=user_id))
        return None if value is None else float(value)

    async def marks(self, *, user_ids: Collection[uuid.UUID]) -> list[Revocation]:
        """The marks of those of ``user_ids`` that have one (one round trip)."""
        if not user_ids:
            return []
        ordered = list(user_ids)
        values = await self._redis.mget([self.mark_key(user_id=user_id) for user_id in ordered])
        return [
            Revocation(user_id=user_id, at=float(value))
            for user_id, value in zip(ordered, values, strict=True)
            if value is not None
        ]

    async def is_revoked(self, *, user_id: uuid.UUID, issued_at: float) -> bool:
        """Is a token of this user, issued at ``issued_at``, refused? When Redis does
        not answer: no (logged); the token still expires."""
        try:
            since = await self.revoked_since(user_id=user_id)
        except RedisError as e:
            self.not_checked(error=e)
            return False
        return since is not None and issued_at <= since
