"""The shared Redis rate limiter against a real Redis, and a private one that the
tests stop to see each failure policy; the caller check (revocation mark and count in
one script) likewise, and that it costs one round trip."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from devstack.testing import eventually
from gateway.adapters.ratelimiter import RedisCallerCheck, RedisRateLimiter
from gateway.domain.errors import StoreUnavailable
from gateway.domain.model import Principal, RateLimitPolicy, Standing
from interchange_common.revocations import RedisRevocations

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


def caller(*, issued_at: float | None = None) -> Principal:
    now = time.time()
    return Principal(
        uuid.uuid4(), frozenset({"user"}), expires_at=now + 600, issued_at=now if issued_at is None else issued_at
    )


def checking(callers: RedisCallerCheck, *, ip_policy: RateLimitPolicy):
    """``check(principal, policy)``: the standing of a call by ``principal`` from one address."""

    async def check(principal: Principal, policy: RateLimitPolicy | None) -> Standing:
        return await callers.standing(
            principal=principal, policy=policy, key=f"user:{principal.user_id}", ip_policy=ip_policy, client="ip:c"
        )

    return check


def allowed(standing: Standing) -> bool:
    assert standing.decision is not None
    return standing.decision.allowed


async def test_a_callers_check_is_one_round_trip_whatever_it_finds(counted_redis, key_prefix):
    redis, trips = counted_redis
    limiter = RedisRateLimiter(redis=redis, key_prefix=key_prefix)
    revocations = RedisRevocations(redis=redis, key_prefix=key_prefix)
    check = checking(
        RedisCallerCheck(redis=redis, limiter=limiter, revocations=revocations),
        ip_policy=RateLimitPolicy("rt-ip", 100, 60),
    )
    policy = RateLimitPolicy("rt-user", 100, 60)
    standing, revoked = caller(), caller(issued_at=time.time() - 60)
    await revocations.revoke(user_id=revoked.user_id, at=time.time())
    await check(standing, policy)  # the first call may load the script (NOSCRIPT, SCRIPT LOAD, EVALSHA)
    for principal, counted_by, was_revoked in (
        (standing, policy, False),
        (revoked, policy, True),
        (standing, None, False),
    ):
        before = trips.count
        result = await check(principal, counted_by)
        assert trips.count - before == 1
        assert result.revoked is was_revoked
        assert (result.decision is None) is (counted_by is None)


async def test_a_callers_check_failing_open_counts_in_the_instance_and_lets_tokens_through(
    private_redis, private_client
):
    limiter = RedisRateLimiter(redis=private_client, key_prefix="ic-it-open", on_failure="open")
    revocations = RedisRevocations(redis=private_client, key_prefix="ic-it-open")
    check = checking(
        RedisCallerCheck(redis=private_client, limiter=limiter, revocations=revocations),
        ip_policy=RateLimitPolicy("ip", 3, 60),
    )
    policy = RateLimitPolicy("open", limit=3, window_seconds=60)
    revoked = caller(issued_at=time.time() - 60)
    await revocations.revoke(user_id=revoked.user_id, at=time.time())
    assert (await check(revoked, policy)).revoked
    await asyncio.to_thread(private_redis.stop)
    results = [await check(revoked, policy) for _ in range(5)]
    # The mark cannot be read: the token passes (it still expires); the user is counted here.
    assert [r.revoked for r in results] == [False] * 5
    assert [allowed(r) for r in results] == [True, True, True, False, False]
    await asyncio.to_thread(private_redis.start)

    async def refused_again() -> bool:
        try:  # the private server starts again empty: the mark is written anew
            await revocations.revoke(user_id=revoked.user_id, at=time.time())
        except RedisError:
            return False
        return (await check(revoked, policy)).revoked

    await eventually(refused_again, timeout=10, what="the revoked token to be refused again")


async def test_a_callers_check_failing_closed_refuses_while_redis_is_down(private_redis, private_client):
    limiter = RedisRateLimiter(redis=private_client, key_prefix="ic-it-closed", on_failure="closed")
    revocations = RedisRevocations(redis=private_client, key_prefix="ic-it-closed")
    policy = RateLimitPolicy("closed", limit=100, window_seconds=60)
    check = checking(RedisCallerCheck(redis=private_client, limiter=limiter, revocations=revocations), ip_policy=policy)
    principal = caller()
    assert allowed(await check(principal, policy))
    await asyncio.to_thread(private_redis.stop)
    with pytest.raises(StoreUnavailable, match="rate limiter is unavailable"):
        await check(principal, policy)
    assert (await check(principal, None)).decision is None  # nothing to count, nothing refused
    await asyncio.to_thread(private_redis.start)

    async def passes() -> bool:
        try:
            return allowed(await check(principal, policy))
        except StoreUnavailable:
            return False

    await eventually(passes, timeout=10, what="requests to pass once Redis answers again")
