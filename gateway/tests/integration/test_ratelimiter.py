"""The shared Redis rate limiter against a real Redis, and a private one that the
tests stop to see each failure policy."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from devstack.testing import eventually
from gateway.adapters.ratelimiter import RedisRateLimiter
from gateway.domain.errors import StoreUnavailable
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


@pytest.fixture
async def private_client(private_redis) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis.url, socket_connect_timeout=0.3, socket_timeout=0.3)
    yield client
    await client.aclose()


async def test_failing_open_keeps_limiting_in_the_instance_while_redis_is_down(private_redis, private_client):
    limiter = RedisRateLimiter(redis=private_client, key_prefix="ic-it-open", on_failure="open")
    policy = RateLimitPolicy("open", limit=3, window_seconds=60)
    assert (await limiter.hit(policy=policy, key="k")).allowed  # counted in Redis
    await asyncio.to_thread(private_redis.stop)
    decisions = [await limiter.hit(policy=policy, key="k") for _ in range(5)]
    # The instance counts from nothing (it cannot see Redis's count), and still stops at the limit.
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert decisions[-1].headers()["Retry-After"] == str(decisions[-1].reset_seconds)
    await asyncio.to_thread(private_redis.start)

    async def counted_in_redis_again() -> bool:
        decision = await limiter.hit(policy=policy, key=f"back-{uuid.uuid4().hex}")
        return decision.allowed and bool(await private_client.keys("{ic-it-open:rl:open:back-*"))

    await eventually(counted_in_redis_again, timeout=10, what="the limiter to use Redis again")


async def test_failing_closed_refuses_while_redis_is_down(private_redis, private_client):
    limiter = RedisRateLimiter(redis=private_client, key_prefix="ic-it-closed", on_failure="closed")
    policy = RateLimitPolicy("closed", limit=100, window_seconds=60)
    assert (await limiter.hit(policy=policy, key="k")).allowed
    await asyncio.to_thread(private_redis.stop)
    with pytest.raises(StoreUnavailable, match="rate limiter is unavailable"):
        await limiter.hit(policy=policy, key="k")
    await asyncio.to_thread(private_redis.start)
    await eventually(lambda: _allowed(limiter, policy), timeout=10, what="requests to pass once Redis answers again")


async def _allowed(limiter: RedisRateLimiter, policy: RateLimitPolicy) -> bool:
    try:
        return (await limiter.hit(policy=policy, key="k")).allowed
    except StoreUnavailable:
        return False
