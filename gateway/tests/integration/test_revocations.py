"""Revoked tokens against a real Redis: the mark, its expiry, and the check (read with
the rate-limit count, in one script: RedisCallerCheck)."""

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Literal

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from devstack.testing import free_port
from gateway.adapters.ratelimiter import RedisCallerCheck, RedisRateLimiter
from gateway.adapters.revocations import RevocationHandler
from gateway.domain.errors import StoreUnavailable
from gateway.domain.model import Principal, RateLimitPolicy, Standing
from interchange_common.messaging import Delivery
from interchange_common.revocations import RedisRevocations, Revocation

pytestmark = pytest.mark.integration


@pytest.fixture
def revocations(redis, key_prefix) -> RedisRevocations:
    return RedisRevocations(redis=redis, key_prefix=f"{key_prefix}:rv", ttl_seconds=120)


def delivery(event: Mapping[str, object]) -> Delivery:
    return Delivery(message_id="m", routing_key=str(event["type"]), body=orjson.dumps(event), headers={}, attempt=1)


POLICY = RateLimitPolicy("rv-user", 100, 60)
IP_POLICY = RateLimitPolicy("rv-ip", 50, 60)


def callers_on(
    redis: Redis, revocations: RedisRevocations, *, key_prefix: str, on_failure: Literal["open", "closed"] = "open"
) -> RedisCallerCheck:
    limiter = RedisRateLimiter(redis=redis, key_prefix=key_prefix, on_failure=on_failure)
    return RedisCallerCheck(redis=redis, limiter=limiter, revocations=revocations)


async def test_a_suspension_event_revokes_tokens_issued_before_it(revocations, redis, key_prefix):
    user_id = uuid.uuid4()
    now = time.time()
    event = {
        "type": "user.updated",
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "data": {"id": str(user_id), "status": "SUSPENDED"},
    }
    await RevocationHandler(revocations=revocations)(delivery(event))
    since = await revocations.revoked_since(user_id=user_id)
    assert since == pytest.approx(int(now))
    assert 0 < await redis.ttl(f"{key_prefix}:rv:revoked:{user_id}") <= 120

    before = Principal(user_id=user_id, roles=frozenset({"user"}), expires_at=now + 600, issued_at=int(now) - 60)
    at_the_mark = Principal(user_id=user_id, roles=frozenset({"user"}), expires_at=now + 600, issued_at=since)
    after = Principal(user_id=user_id, roles=frozenset({"user"}), expires_at=now + 600, issued_at=int(now) + 2)
    callers = callers_on(redis, revocations, key_prefix=f"{key_prefix}:rv")
    client = f"ip:{uuid.uuid4()}"

    async def standing(principal: Principal):
        return await callers.standing(
            principal=principal, policy=POLICY, key=f"user:{user_id}", ip_policy=IP_POLICY, client=client
        )

    # Revoked (issued at or before the mark): counted against the client's address, not the user.
    for revoked in (before, at_the_mark):
        refused = await standing(revoked)
        assert refused.revoked
        assert refused.decision is not None
        assert refused.decision.limit == IP_POLICY.limit
    admitted = await standing(after)
    assert not admitted.revoked
    assert admitted.decision is not None
    assert (admitted.decision.limit, admitted.decision.remaining) == (POLICY.limit, POLICY.limit - 1)
    again = await standing(before)
    assert again.decision is not None
    assert again.decision.remaining == IP_POLICY.limit - 3


async def test_the_later_mark_wins_whatever_the_order(revocations):
    user_id = uuid.uuid4()
    await revocations.revoke(user_id=user_id, at=2000.0)
    await revocations.revoke(user_id=user_id, at=1000.0)
    assert await revocations.revoked_since(user_id=user_id) == 2000.0


async def test_other_events_revoke_nothing(revocations):
    user_id = uuid.uuid4()
    renamed = {
        "type": "user.updated",
        "occurred_at": "2026-11-27T10:00:00Z",
        "data": {"id": str(user_id), "status": "ACTIVE"},
    }
    await RevocationHandler(revocations=revocations)(delivery(renamed))
    assert await revocations.revoked_since(user_id=user_id) is None


async def test_an_unreachable_redis_lets_the_token_through(caplog):
    # Refused at once and not retried (the client's default retries take seconds a call).
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    principal = Principal(user_id=uuid.uuid4(), roles=frozenset(), expires_at=time.time() + 60, issued_at=time.time())
    store = RedisRevocations(redis=dead, key_prefix="unused", ttl_seconds=60)

    async def standing(callers: RedisCallerCheck, policy: RateLimitPolicy | None) -> Standing:
        return await callers.standing(principal=principal, policy=policy, key="user:u", ip_policy=IP_POLICY, client="c")

    try:
        assert not await store.is_revoked(user_id=principal.user_id, issued_at=principal.issued_at)
        with caplog.at_level(logging.WARNING):
            # Failing open: the token passes, and the call is counted in this instance.
            opened = await standing(callers_on(dead, store, key_prefix="unused", on_failure="open"), POLICY)
            assert not opened.revoked
            assert opened.decision is not None
            assert (opened.decision.allowed, opened.decision.remaining) == (True, POLICY.limit - 1)
            # Failing closed: the token passes the revocation check, the count refuses the call.
            closed = callers_on(dead, store, key_prefix="unused", on_failure="closed")
            with pytest.raises(StoreUnavailable, match="rate limiter is unavailable"):
                await standing(closed, POLICY)
            # Nothing to count (a caller the route refuses): no refusal for want of Redis.
            uncounted = await standing(closed, None)
            assert (uncounted.revoked, uncounted.decision) == (False, None)
    finally:
        await dead.aclose()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "revocations unavailable, token not checked",  # is_revoked
        "revocations unavailable, token not checked",
        "rate limiter unavailable, counting in this instance",
        "revocations unavailable, token not checked",
        "rate limiter unavailable, refusing the request",
        "revocations unavailable, token not checked",
    ]


async def test_each_mark_is_announced_with_the_mark_kept_in_the_same_script(revocations, redis, key_prefix):
    user_id, other = uuid.uuid4(), uuid.uuid4()
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{key_prefix}:rv:revocations")
    try:
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        await revocations.revoke(user_id=user_id, at=2000.0)
        await revocations.revoke(user_id=user_id, at=1000.0)  # late and older: the later mark stays
        heard = [await pubsub.get_message(timeout=5) for _ in range(2)]
    finally:
        await pubsub.aclose()
    assert [Revocation.parse(message["data"]) for message in heard] == [Revocation(user_id=user_id, at=2000.0)] * 2
    assert await revocations.marks(user_ids=[user_id, other]) == [Revocation(user_id=user_id, at=2000.0)]
    assert await revocations.marks(user_ids=[]) == []
