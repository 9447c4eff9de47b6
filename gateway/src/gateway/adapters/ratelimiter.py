"""A rate limiter shared by every gateway instance, in Redis.

Sliding-window counter: the count of the current fixed window plus the previous
window's count weighted by how much of it still overlaps the sliding window. One
Lua script reads, decides and counts atomically, takes the time from Redis (so
instances with skewed clocks agree) and sets the expiry in the same step that
creates a key: no key is ever left without a TTL.

RedisRateLimiter     counts one hit (one script call)
RedisCallerCheck     a signed-in caller's revocation mark and the count of the call,
                     read and made in one script call: one round trip per request
LocalRateLimiter     the same window in this instance's memory

When Redis cannot be reached the configured policy applies (RATE_LIMIT_ON_REDIS_FAILURE):
"open" keeps limiting with the same window in this instance's memory, "closed"
refuses requests with 503 until Redis answers again. Revocations are checked against
this instance's copy of the marks (domain.revocations.RevocationMarks) then; only
while that copy has never been loaded is a token let through unchecked (logged).
"""

import logging
import math
import time
from collections.abc import Callable
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.domain.errors import StoreUnavailable
from gateway.domain.model import Principal, RateDecision, RateLimitPolicy, Standing
from gateway.domain.revocations import RevocationMarks
from interchange_common.accesstokens import MAX_ACCESS_TOKEN_TTL_SECONDS
from interchange_common.revocations import RedisRevocations

_log = logging.getLogger(__name__)

# count(base, limit, window, now): one hit on the counter ``base`` (hash-tagged, so both
# windows live in one cluster slot) at ``now`` (ms); returns {allowed, remaining, reset_ms}.
_COUNT = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function count(base, limit, window, now)
  local index = math.floor(now / window)
  local current_key = base .. ':' .. index
  local previous = tonumber(redis.call('GET', base .. ':' .. (index - 1)) or '0')
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
end
"""

# KEYS[1]: the counter base. ARGV: limit, window in milliseconds. Returns {allowed, remaining, reset_ms}.
_HIT = (
    _COUNT
    + """
return count(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_ms())
"""
)

# KEYS[1]: the user's revocation mark; KEYS[2]: the client address's counter base;
# KEYS[3], when given: the user's counter base.
# ARGV: the token's issue time (epoch seconds), the client's limit and window (ms),
# then with KEYS[3] the user's limit and window (ms).
# Returns {1, allowed, remaining, reset_ms} for a revoked token (issued at or before
# the mark), counted against the client; else {0, allowed, remaining, reset_ms}
# counted against the user, or {0} when there is no KEYS[3] (nothing counted).
# The mark and the counters are in different slots: one Redis, not a cluster.
_STANDING = (
    _COUNT
    + """
local mark = redis.call('GET', KEYS[1])
if mark and tonumber(ARGV[1]) <= tonumber(mark) then
  local hit = count(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms())
  return {1, hit[1], hit[2], hit[3]}
end
if #KEYS < 3 then
  return {0}
end
local hit = count(KEYS[3], tonumber(ARGV[4]), tonumber(ARGV[5]), now_ms())
return {0, hit[1], hit[2], hit[3]}
"""
)


def _decision(*, policy: RateLimitPolicy, reply: list[int]) -> RateDecision:
    """A count's reply, {allowed, remaining, reset_ms}, as the decision under ``policy``."""
    allowed, remaining, reset_ms = reply
    return RateDecision(
        allowed=bool(allowed),
        limit=policy.limit,
        remaining=max(0, int(remaining)),
        reset_seconds=max(1, math.ceil(int(reset_ms) / 1000)),
    )


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
        self._script = redis.register_script(_HIT)
        self._on_failure = on_failure
        self._local = local or LocalRateLimiter()

    def counter_key(self, *, policy: RateLimitPolicy, key: str) -> str:
        return f"{{{self._prefix}:rl:{policy.name}:{key}}}"

    async def hit(self, *, policy: RateLimitPolicy, key: str) -> RateDecision:
        try:
            reply = await self._script(
                keys=[self.counter_key(policy=policy, key=key)], args=[policy.limit, policy.window_seconds * 1000]
            )
        except RedisError as e:
            return self.unavailable(error=e, policy=policy, key=key)
        return _decision(policy=policy, reply=reply)

    def unavailable(self, *, error: RedisError, policy: RateLimitPolicy, key: str) -> RateDecision:
        """The hit Redis could not count, as ``on_failure`` says: counted in this
        instance, or StoreUnavailable."""
        if self._on_failure == "closed":
            _log.warning("rate limiter unavailable, refusing the request", extra={"error": type(error).__name__})
            raise StoreUnavailable("the rate limiter is unavailable; try again shortly") from error
        _log.warning("rate limiter unavailable, counting in this instance", extra={"error": type(error).__name__})
        return self._local.hit(policy=policy, key=key)


class RedisCallerCheck:
    """A signed-in caller's revocation mark read and the call counted in one script
    call, where checking the token (RedisRevocations.is_revoked) and counting
    (RedisRateLimiter.hit) took a round trip each. A token issued at or before its
    user's mark is revoked: the call counts against the client's address instead.

    ``marks``, this instance's copy of the marks, is looked at first (a dictionary
    lookup): a token it refuses is refused without reading Redis's mark (the call is
    still counted, one round trip either way). That covers the moments after a Redis
    restart, before the marks are back in it (adapters.revocations.RevocationKeeper).

    When Redis fails, each half keeps its own policy: the token is checked against the
    copy alone (let through unchecked only if the copy was never loaded; logged
    either way, it still expires), and the count follows the limiter's ``on_failure``."""

    def __init__(
        self,
        *,
        redis: Redis,
        limiter: RedisRateLimiter,
        revocations: RedisRevocations,
        marks: RevocationMarks | None = None,
    ) -> None:
        self._limiter = limiter
        self._revocations = revocations
        self._marks = marks if marks is not None else RevocationMarks(ttl_seconds=MAX_ACCESS_TOKEN_TTL_SECONDS)
        self._script = redis.register_script(_STANDING)

    async def standing(
        self,
        *,
        principal: Principal,
        policy: RateLimitPolicy | None,
        key: str,
        ip_policy: RateLimitPolicy,
        client: str,
    ) -> Standing:
        """``principal``'s standing; the call counted against ``key`` under ``policy``
        (not at all when None), or against ``client`` under ``ip_policy`` when the
        token is revoked."""
        limiter = self._limiter
        if self._marks.is_revoked(user_id=principal.user_id, issued_at=principal.issued_at):
            return Standing(revoked=True, decision=await limiter.hit(policy=ip_policy, key=client))
        keys = [
            self._revocations.mark_key(user_id=principal.user_id),
            limiter.counter_key(policy=ip_policy, key=client),
        ]
        args: list[float | int] = [principal.issued_at, ip_policy.limit, ip_policy.window_seconds * 1000]
        if policy is not None:
            keys.append(limiter.counter_key(policy=policy, key=key))
            args += [policy.limit, policy.window_seconds * 1000]
        try:
            reply = await self._script(keys=keys, args=args)
        except RedisError as e:
            if self._marks.loaded:
                _log.warning(
                    "revocations unavailable, token checked against this instance's copy",
                    extra={"error": type(e).__name__},
                )
            else:
                self._revocations.not_checked(error=e)
            if policy is None:
                return Standing(revoked=False, decision=None)
            return Standing(revoked=False, decision=limiter.unavailable(error=e, policy=policy, key=key))
        revoked, *counted = reply
        if revoked:
            return Standing(revoked=True, decision=_decision(policy=ip_policy, reply=counted))
        if policy is None:
            return Standing(revoked=False, decision=None)
        return Standing(revoked=False, decision=_decision(policy=policy, reply=counted))
