"""Revoked tokens against a real Redis: the mark, its expiry, and the check."""

import time
import uuid
from collections.abc import Mapping

import orjson
import pytest
from redis.asyncio import Redis

from devstack.testing import free_port
from gateway.adapters.revocations import RevocationHandler, checked
from gateway.domain.errors import AuthenticationFailed
from gateway.domain.model import Principal
from interchange_common.messaging import Delivery
from interchange_common.revocations import RedisRevocations, Revocation

pytestmark = pytest.mark.integration


@pytest.fixture
def revocations(redis, key_prefix) -> RedisRevocations:
    return RedisRevocations(redis=redis, key_prefix=f"{key_prefix}:rv", ttl_seconds=120)


def delivery(event: Mapping[str, object]) -> Delivery:
    return Delivery(message_id="m", routing_key=str(event["type"]), body=orjson.dumps(event), headers={}, attempt=1)


def verify_as(principal: Principal):
    async def verify(*, header: str | None) -> Principal:
        return principal

    return verify


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
    after = Principal(user_id=user_id, roles=frozenset({"user"}), expires_at=now + 600, issued_at=int(now) + 2)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await checked(verify=verify_as(before), revocations=revocations)(header="Bearer x")
    assert await checked(verify=verify_as(after), revocations=revocations)(header="Bearer x") == after


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


async def test_an_unreachable_redis_lets_the_token_through():
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    principal = Principal(user_id=uuid.uuid4(), roles=frozenset(), expires_at=time.time() + 60, issued_at=time.time())
    store = RedisRevocations(redis=dead, key_prefix="unused", ttl_seconds=60)
    try:
        assert await checked(verify=verify_as(principal), revocations=store)(header="Bearer x") == principal
    finally:
        await dead.aclose()


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
