"""The shared Redis rate limiter against a real Redis."""

import uuid

import pytest

from gateway.adapters.ratelimiter import RedisRateLimiter
from gateway.domain.model import RateLimitPolicy

pytestmark = pytest.mark.integration


async def test_the_limit_allows_then_refuses_with_a_reset_time(limiter):
    policy = RateLimitPolicy("t1", limit=5, window_seconds=60)
    key = uuid.uuid4().hex
    decisions = [await limiter.hit(policy=policy, key=key) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 1 <= decisions[-1].reset_seconds <= 60


async def test_two_limiters_on_one_redis_share_the_count(redis, key_prefix):
    first = RedisRateLimiter(redis=redis, key_prefix=key_prefix)
    second = RedisRateLimiter(redis=redis, key_prefix=key_prefix)
    policy = RateLimitPolicy("t2", limit=4, window_seconds=60)
    key = uuid.uuid4().hex
    allowed = [(await (first if i % 2 else second).hit(policy=policy, key=key)).allowed for i in range(6)]
    assert allowed == [True] * 4 + [False] * 2


async def test_keys_are_counted_apart(limiter):
    policy = RateLimitPolicy("t3", limit=1, window_seconds=60)
    assert (await limiter.hit(policy=policy, key="a-" + uuid.uuid4().hex)).allowed
    assert (await limiter.hit(policy=policy, key="b-" + uuid.uuid4().hex)).allowed


async def test_every_counter_key_has_a_ttl(limiter, redis, key_prefix):
    policy = RateLimitPolicy("t4", limit=3, window_seconds=30)
    key = uuid.uuid4().hex
    for _ in range(5):
        await limiter.hit(policy=policy, key=key)
    keys = [k async for k in redis.scan_iter(match=f"*{key_prefix}:rl:t4:{key}*")]
    assert keys
    for counter in keys:
        ttl = await redis.pttl(counter)
        assert 0 < ttl <= 60_000


async def test_an_unreachable_redis_lets_requests_through():
    from redis.asyncio import Redis

    from devstack.testing import free_port

    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    limiter = RedisRateLimiter(redis=dead, key_prefix="unused")
    decision = await limiter.hit(policy=RateLimitPolicy("t5", limit=1, window_seconds=60), key="k")
    assert decision.allowed
    await dead.aclose()
