"""Users whose tokens stop working before they expire (deleted, suspended, roles
changed): one mark per user in Redis, "tokens issued at or before this time are
refused", kept as long as a token can live, and announced on a channel as it is
written, so that live connections opened before it end at once.

    <prefix>:revoked:<user>       the mark, epoch seconds (a later one wins)
    <prefix>:revocations          channel: "<user> <mark>" each time a mark is written,
                                  in the same script as the SET: no mark goes unannounced
    <prefix>:revocations:loaded   sentinel: set once every mark user-service keeps has been
                                  written here (``restore``). Redis keeps nothing on disk:
                                  after a restart the sentinel is gone with the marks, and
                                  its absence is what tells the gateway to write them again.

user-service keeps the marks too (its revocations table, written with the change
that revokes); Redis holds the copy every instance reads on every request. The
gateway writes the marks (from user events, and all of them again from user-service
when the sentinel is missing) and checks them on every request; notification-service
checks them when a feed signs in and listens on the channel to end the live
connections (WebSocket, SSE, TCP, UDP) of a revoked token. It only reads them, so it
needs no trigger of its own after a restart: the gateway's restore announces every
mark it writes back, which ends a feed signed in before the marks were back (and a
deployment without a gateway has no marks to lose).
"""

import logging
import math
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from interchange_common.errors import InterchangeCommonError

_log = logging.getLogger("interchange.revocations")

# revoke(key, at, keep, channel, user): keeps the later of two marks (events may arrive
# out of order, a restore may bring an older one), never shortens how long the key has
# left to live, and announces the mark it keeps.
_KEEP_LATER = """
local function revoke(key, at, keep, channel, user)
  local current = tonumber(redis.call('GET', key) or '0')
  if at < current then at = current end
  local left = redis.call('TTL', key)
  if left > keep then keep = left end
  local mark = string.format('%.3f', at)
  redis.call('SET', key, mark, 'EX', keep)
  redis.call('PUBLISH', channel, user .. ' ' .. mark)
end
"""

# KEYS[1] the user's mark. ARGV: time (epoch seconds), seconds to keep it, channel, user id.
_REVOKE = (
    _KEEP_LATER
    + """
revoke(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])
return 1
"""
)

# KEYS[1] the sentinel, KEYS[2..] the marks. ARGV[1] the channel, then for each mark
# key: user id, time, seconds to keep it. One script, so the sentinel is set only with
# every mark (a Redis that restarts midway gets neither), and atomic against the
# revoke of an event that arrives meanwhile: the later mark stays either way.
_RESTORE = (
    _KEEP_LATER
    + """
for i = 2, #KEYS do
  local at = (i - 2) * 3 + 2
  revoke(KEYS[i], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), ARGV[1], ARGV[at])
end
redis.call('SET', KEYS[1], '1')
return #KEYS - 1
"""
)


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
        self._restore = redis.register_script(_RESTORE)
        self.channel = f"{key_prefix}:revocations".encode()
        self._loaded_key = f"{key_prefix}:revocations:loaded"

    def mark_key(self, *, user_id: uuid.UUID) -> str:
        """The key of the user's mark (for a script that reads it with other keys)."""
        return f"{self._prefix}:revoked:{user_id}"

    def not_checked(self, *, error: RedisError) -> None:
        """Log a token let through unchecked because Redis did not answer: the policy of
        ``is_revoked``, for callers that read the mark in a script of their own."""
        _log.warning("revocations unavailable, token not checked", extra={"error": type(error).__name__})

    async def revoke(self, *, user_id: uuid.UUID, at: float) -> None:
        await self._revoke(keys=[self.mark_key(user_id=user_id)], args=[at, self._ttl, self.channel, str(user_id)])

    async def loaded(self) -> bool:
        """Does Redis hold every mark (the sentinel ``restore`` sets)? False after a
        restart, which empties it."""
        return bool(await self._redis.exists(self._loaded_key))

    async def restore(self, *, marks: Collection[Revocation], now: float) -> int:
        """Write every one of ``marks`` (the later mark wins, as in ``revoke``; each kept
        until ``ttl_seconds`` after its time, one that has run out skipped), announce
        each, and set the sentinel: one script, one round trip. Returns how many were
        written. Redis is busy with it for about 6 µs a mark (measured: 10 000 marks,
        60 ms), once per restart."""
        live = [(mark, math.ceil(mark.at + self._ttl - now)) for mark in marks]
        live = [(mark, keep) for mark, keep in live if keep > 0]
        keys = [self._loaded_key, *(self.mark_key(user_id=mark.user_id) for mark, _ in live)]
        args: list[str | float | int | bytes] = [self.channel]
        for mark, keep in live:
            args += [str(mark.user_id), mark.at, keep]
        return int(await self._restore(keys=keys, args=args))

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
