"""Idempotency keys in real PostgreSQL: one order per (user, key), concurrency-safe, expiring."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import throwaway_database
from interchange_common.migrations import upgrade
from order_service.adapters.idempotency import SqlIdempotencyKeys, idempotency_keys
from order_service.bootstrap import MIGRATIONS
from order_service.domain.errors import IdempotencyKeyReused

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def engine(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_order_keys") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        engine = create_async_engine(url, pool_size=20)
        yield engine
        await engine.dispose()


@pytest.fixture
def keys(engine):
    return SqlIdempotencyKeys(engine=engine, ttl=timedelta(hours=1))


async def test_a_key_stands_for_its_first_order(keys):
    user, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await keys.claim(user_id=user, key="k", fingerprint="f", order_id=first) == first
    assert await keys.claim(user_id=user, key="k", fingerprint="f", order_id=second) == first


async def test_a_key_with_another_fingerprint_is_refused(keys):
    user = uuid.uuid4()
    await keys.claim(user_id=user, key="k", fingerprint="f", order_id=uuid.uuid4())
    with pytest.raises(IdempotencyKeyReused):
        await keys.claim(user_id=user, key="k", fingerprint="g", order_id=uuid.uuid4())


async def test_keys_are_per_user(keys):
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    assert await keys.claim(user_id=uuid.uuid4(), key="k", fingerprint="f", order_id=mine) == mine
    assert await keys.claim(user_id=uuid.uuid4(), key="k", fingerprint="g", order_id=theirs) == theirs


async def test_concurrent_claims_agree_on_one_order(keys):
    user = uuid.uuid4()
    candidates = [uuid.uuid4() for _ in range(20)]
    won = await asyncio.gather(
        *(keys.claim(user_id=user, key="race", fingerprint="f", order_id=order_id) for order_id in candidates)
    )
    assert len(set(won)) == 1
    assert won[0] in candidates


async def test_an_expired_key_is_taken_over_and_purged(engine, keys):
    user, old, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await keys.claim(user_id=user, key="old", fingerprint="f", order_id=old)
    async with engine.begin() as conn:
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.user_id == user)
            .values(expires_at=func.now() - timedelta(seconds=1))
        )
    assert await keys.claim(user_id=user, key="old", fingerprint="other", order_id=new) == new
    async with engine.begin() as conn:
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.user_id == user)
            .values(expires_at=func.now() - timedelta(seconds=1))
        )
    assert await keys.purge_expired() >= 1
    async with engine.connect() as conn:
        left = await conn.scalar(select(func.count()).where(idempotency_keys.c.user_id == user))
    assert left == 0
