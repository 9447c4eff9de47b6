"""Tickets against a fake Redis: only a hash is stored, with a lifetime; one use."""

import hashlib
import time
import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.adapters.tickets import RedisTicketStore
from gateway.domain.errors import AuthenticationFailed, StoreUnavailable
from gateway.domain.model import Principal

USER = Principal(uuid.uuid4(), frozenset({"user", "admin"}), expires_at=time.time() + 600, issued_at=time.time() - 60)


class FakeRedis:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.ttls: dict[str, int] = {}
        self.broken = False

    async def set(self, name: str, value: bytes, /, *, ex: int) -> None:
        if self.broken:
            raise RedisConnectionError("down")
        self.values[name] = value
        self.ttls[name] = ex

    async def getdel(self, name: str, /) -> bytes | None:
        if self.broken:
            raise RedisConnectionError("down")
        self.ttls.pop(name, None)
        return self.values.pop(name, None)


@pytest.fixture
def redis() -> FakeRedis:
    return FakeRedis()


@pytest.fixture
def store(redis: FakeRedis) -> RedisTicketStore:
    return RedisTicketStore(redis=redis, key_prefix="p", ttl_seconds=30)


async def test_only_the_hash_is_stored_with_the_lifetime(store, redis):
    ticket = await store.issue(principal=USER)
    assert len(ticket) >= 43
    (key,) = redis.values
    assert key == f"p:ticket:{hashlib.sha256(ticket.encode()).hexdigest()}"
    assert redis.ttls[key] == 30
    assert ticket.encode() not in redis.values[key]


async def test_a_ticket_redeems_once_to_its_caller(store):
    ticket = await store.issue(principal=USER)
    assert await store.redeem(ticket=ticket) == USER
    with pytest.raises(AuthenticationFailed):
        await store.redeem(ticket=ticket)


async def test_tickets_differ(store):
    assert await store.issue(principal=USER) != await store.issue(principal=USER)


async def test_a_ticket_outliving_its_access_token_is_refused(redis):
    clock = [time.time()]
    store = RedisTicketStore(redis=redis, key_prefix="p", ttl_seconds=30, clock=lambda: clock[0])
    ticket = await store.issue(principal=Principal(uuid.uuid4(), frozenset(), expires_at=clock[0] + 10))
    clock[0] += 11
    with pytest.raises(AuthenticationFailed, match="expired"):
        await store.redeem(ticket=ticket)


@pytest.mark.parametrize("ticket", ["", "x" * 129])
async def test_malformed_tickets_are_refused_without_asking_redis(store, redis, ticket):
    redis.broken = True
    with pytest.raises(AuthenticationFailed):
        await store.redeem(ticket=ticket)


async def test_a_broken_record_is_refused(store, redis):
    redis.values[store.key_for(ticket="t")] = b"{not json"
    with pytest.raises(AuthenticationFailed):
        await store.redeem(ticket="t")


async def test_redis_down_is_store_unavailable(store, redis):
    redis.broken = True
    with pytest.raises(StoreUnavailable):
        await store.issue(principal=USER)
    with pytest.raises(StoreUnavailable):
        await store.redeem(ticket="t" * 43)
