"""Users whose tokens stop working before they expire (deleted, suspended): one mark
per user in Redis, "tokens issued at or before this time are refused", kept as long
as a token can live. The gateway writes the marks (from user events) and checks
them on every request; notification-service checks them on its TCP and UDP feeds.
"""

import logging
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

_log = logging.getLogger("interchange.revocations")

# KEYS[1] the user's mark. ARGV: time (epoch seconds), ttl in seconds. Keeps the later
# of two marks (events may arrive out of order) and always sets the expiry.
_REVOKE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local at = tonumber(ARGV[1])
if at < current then at = current end
redis.call('SET', KEYS[1], string.format('%.3f', at), 'EX', tonumber(ARGV[2]))
return 1
"""


class RedisRevocations:
    def __init__(self, *, redis: Redis, key_prefix: str, ttl_seconds: int = 3600) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._ttl = ttl_seconds
        self._revoke = redis.register_script(_REVOKE)

    def _key(self, user_id: uuid.UUID) -> str:
        return f"{self._prefix}:revoked:{user_id}"

    async def revoke(self, *, user_id: uuid.UUID, at: float) -> None:
        await self._revoke(keys=[self._key(user_id)], args=[at, self._ttl])

    async def revoked_since(self, *, user_id: uuid.UUID) -> float | None:
        """Tokens issued at or before this time are refused; None: none are."""
        value = await self._redis.get(self._key(user_id))
        return None if value is None else float(value)

    async def is_revoked(self, *, user_id: uuid.UUID, issued_at: float) -> bool:
        """Is a token of this user, issued at ``issued_at``, refused? When Redis does
        not answer: no (logged); the token still expires."""
        try:
            since = await self.revoked_since(user_id=user_id)
        except RedisError as e:
            _log.warning("revocations unavailable, token not checked", extra={"error": type(e).__name__})
            return False
        return since is not None and issued_at <= since
