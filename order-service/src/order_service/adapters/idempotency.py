"""Idempotency keys in order-service's database: (user, key) → the order it placed.

A key belongs to one user; it stands for the first request's body (a fingerprint)
and the order id chosen for it, until it expires. Claims are one statement, so two
concurrent requests with the same key agree on one order id.
"""

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Interval, MetaData, String, Table, Uuid, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from interchange_common.database import translating_unavailable
from order_service.domain.errors import IdempotencyKeyReused

metadata = MetaData()
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("order_id", Uuid, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


def _claim_statement() -> Any:
    """Built once: a statement built per call spends more CPU in SQLAlchemy than the
    round trip costs. A new key, or an expired one taken over; a live key is left as it is."""
    expires_at = func.now() + bindparam("ttl", type_=Interval())
    fresh = insert(idempotency_keys).values(
        user_id=bindparam("user_id"),
        key=bindparam("key"),
        fingerprint=bindparam("fingerprint"),
        order_id=bindparam("order_id"),
        expires_at=expires_at,
    )
    return fresh.on_conflict_do_update(
        index_elements=["user_id", "key"],
        set_={"fingerprint": fresh.excluded.fingerprint, "order_id": fresh.excluded.order_id, "expires_at": expires_at},
        where=idempotency_keys.c.expires_at < func.now(),
    ).returning(idempotency_keys.c.order_id)


_CLAIM = _claim_statement()
_LIVE_KEY = select(idempotency_keys.c.fingerprint, idempotency_keys.c.order_id).where(
    idempotency_keys.c.user_id == bindparam("user_id"), idempotency_keys.c.key == bindparam("key")
)


class SqlIdempotencyKeys:
    def __init__(self, *, engine: AsyncEngine, ttl: timedelta) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._ttl = ttl

    async def claim(self, *, user_id: uuid.UUID, key: str, fingerprint: str, order_id: uuid.UUID) -> uuid.UUID:
        claim = {"user_id": user_id, "key": key, "fingerprint": fingerprint, "order_id": order_id, "ttl": self._ttl}
        # Each statement commits by itself: the claim is atomic alone, and the common
        # case (a new key) is then one round trip, with no BEGIN and COMMIT around it.
        with translating_unavailable(action="claim the idempotency key"):
            async with self._autocommit.connect() as conn:
                while True:
                    claimed = await conn.scalar(_CLAIM, claim)
                    if claimed is not None:
                        return uuid.UUID(str(claimed))
                    row = (await conn.execute(_LIVE_KEY, {"user_id": user_id, "key": key})).first()
                    if row is not None:
                        break
                    # Purged between the two statements: claim it afresh.
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used with another request body")
        return uuid.UUID(str(row.order_id))

    async def purge_expired(self) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(idempotency_keys).where(idempotency_keys.c.expires_at < func.now()))
        return int(result.rowcount or 0)
