"""A rate limiter shared by every gateway instance, in Redis.

Sliding-window counter: the count of the current fixed window plus the previous
window's count weighted by how much of it still overlaps the sliding window. One
Lua script reads, decides and counts atomically, takes the time from Redis (so
instances with skewed clocks agree) and sets the expiry in the same step that
creates a key: no key is ever left without a TTL.

When Redis cannot be reached the configured policy applies (RATE_LIMIT_ON_REDIS_FAILURE):
"open" keeps limiting with the same window in this instance's memory, "closed"
refuses requests with 503 until Redis answers again.
"""

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.domain.errors import StoreUnavailable
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


class LocalRateLimiter:
    """The same sliding window in this process's memory: what an instance enforces
    on its own while Redis is unreachable (each instance counts only what it sees).
    Keys of windows that have ended are dropped as it goes."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # (policy, key) → (window index, count in it, count in the one before)
        self._counts: dict[tuple[str, str], tuple[int, int, int]] = {}

    def hit(self, *, policy: RateLimitPolicy, key: str) -> RateDecision:
        window_ms = policy.window_seconds * 1000
        now = int(self._clock() * 1000)
        index = now // window_ms
        index_was, current, previous = self._counts.get((policy.name, key), (index, 0, 0))
        if index_was != index:
            current, previous = 0, (current if index_was == index - 1 else 0)
        elapsed = now - index * window_ms
        reset = math.ceil((window_ms - elapsed) / 1000)
        estimate = previous * (window_ms - elapsed) / window_ms + current
        if estimate + 1 > policy.limit:
            self._counts[(policy.name, key)] = (index, current, previous)
            return RateDecision(allowed=False, limit=policy.limit, remaining=0, reset_seconds=max(1, reset))
        if len(self._counts) >= self._max_keys:
            self._forget_ended(index=index)
        self._counts[(policy.name, key)] = (index, current + 1, previous)
        return RateDecision(
            allowed=True,
            limit=policy.limit,
            remaining=max(0, math.floor(policy.limit - estimate - 1)),
            reset_seconds=max(1, reset),
        )

    def _forget_ended(self, *, index: int) -> None:
        for counted, (index_was, _, _) in list(self._counts.items()):
            if index_was < index - 1:
                del self._counts[counted]
        while len(self._counts) >= self._max_keys:  # all recent: drop the oldest entries
            del self._counts[next(iter(self._counts))]


class RedisRateLimiter:
    """Counts hits per policy and key in Redis. When Redis fails, ``on_failure``
    decides: "open" counts in this instance's memory instead (LocalRateLimiter), so
    a cache outage neither takes the API down nor lifts every limit; "closed"
    refuses the request (StoreUnavailable, 503). Either way it is logged."""

    def __init__(
        self,
        *,
        redis: Redis,
        key_prefix: str,
        on_failure: Literal["open", "closed"] = "open",
        local: LocalRateLimiter | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._script = redis.register_script(_SCRIPT)
        self._on_failure = on_failure
        self._local = local or LocalRateLimiter()

    async def hit(self, *, policy: RateLimitPolicy, key: str) -> RateDecision:
        redis_key = f"{{{self._prefix}:rl:{policy.name}:{key}}}"
        try:
            allowed, remaining, reset_ms = await self._script(
                keys=[redis_key], args=[policy.limit, policy.window_seconds * 1000]
            )
        except RedisError as e:
            if self._on_failure == "closed":
                _log.warning("rate limiter unavailable, refusing the request", extra={"error": type(e).__name__})
                raise StoreUnavailable("the rate limiter is unavailable; try again shortly") from e
            _log.warning("rate limiter unavailable, counting in this instance", extra={"error": type(e).__name__})
            return self._local.hit(policy=policy, key=key)
        return RateDecision(
            allowed=bool(allowed),
            limit=policy.limit,
            remaining=max(0, int(remaining)),
            reset_seconds=max(1, math.ceil(int(reset_ms) / 1000)),
        )
