"""The SQLAlchemy engine every service with a PostgreSQL database creates, the same way.

    create_engine   an async engine (asyncpg) whose pool tests a connection before
                    handing it out only when the connection sat idle a while

Why not ``pool_pre_ping=True``. With asyncpg, SQLAlchemy's ping is three round trips
(BEGIN, an empty query, ROLLBACK) on every checkout: at 40 orders/s it was about a
tenth of order-service's CPU, and as much again in PostgreSQL. A connection that was
in use a moment ago is almost never the one a server restart broke; one that sat in
the pool for a while may be. So a connection idle for ``ping_after_idle_seconds`` or
more is pinged on checkout (a dead one is replaced at once, as with pre-ping), and a
busy one goes straight to work. What that costs: a PostgreSQL restart while the
service is busy fails the statements in flight and the first one on each connection
already checked in (SQLAlchemy then recycles every older connection of the pool), where
pre-ping would have failed only those in flight. Callers already turn such failures
into a retryable 503.
"""

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

PING_AFTER_IDLE_SECONDS = 5.0
_CHECKED_IN_AT = "interchange_checked_in_at"


def create_engine(*, url: str, pool_size: int, ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=pool_size)
    dialect = engine.sync_engine.dialect
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < ping_after_idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as e:
            # The pool replaces the connection with a new one and checks out again.
            raise DisconnectionError("the pooled connection is gone") from e

    return engine
