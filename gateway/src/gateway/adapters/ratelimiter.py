"""A rate limiter shared by every gateway instance, in Redis.

Sliding-window counter: the count of the current fixed window plus the previous
window's count weighted by how much of it still overlaps the sliding window. One
Lua script reads, decides and counts atomically, takes the time from Redis (so
instances with skewed clocks agree) and sets the expiry in the same step that
creates a key: no key is ever left without a TTL.
"""

import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.domain.model import RateDecision, RateLimitPolicy

_log = logging.getLogger(__name__)

# KEYS[1]: the counter base, hash-tagged so both windows live in one cluster slot.
# ARGV: limit, window in milliseconds. Returns {allowed, remaining, reset_ms}.
_SCRIPT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local index = math.floor(now / window)
local current_key = KEYS[1] .. ':' .. index
local previous = tonumber(redis.call('GET', KEYS[1] .. ':' .. (index - 1)) or '0')
local current = tonumber(redis.call('GET', current_key) or '0')
local elapsed = now - index * window
local reset = window - elapsed
local estimate = previous * (window - elapsed) / window + current
if estimate + 1 > limit then
  return {0, 0, reset}
end
redis.call('INCR', current_key)
redis.call('PEXPIRE', current_key, window * 2)
return {1, math.floor(limit - estimate - 1), reset}
"""


class RedisRateLimiter:
    """Counts hits per policy and key; when Redis fails it lets requests through
    (fail open, logged), so a cache outage does not take the API down with it."""

    def __init__(self, *, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._script = redis.register_script(_SCRIPT)

    async def hit(self, *, policy: RateLimitPolicy, key: str) -> RateDecision:
        redis_key = f"{{{self._prefix}:rl:{policy.name}:{key}}}"
        try:
            allowed, remaining, reset_ms = await self._script(
                keys=[redis_key], args=[policy.limit, policy.window_seconds * 1000]
            )
        except RedisError as e:
            _log.warning("rate limiter unavailable, letting the request through", extra={"error": type(e).__name__})
            return RateDecision(allowed=True, limit=policy.limit, remaining=policy.limit, reset_seconds=0)
        return RateDecision(
            allowed=bool(allowed),
            limit=policy.limit,
            remaining=max(0, int(remaining)),
            reset_seconds=max(1, math.ceil(int(reset_ms) / 1000)),
        )
