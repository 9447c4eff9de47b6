"""The SQLAlchemy engine every service with a PostgreSQL database creates, the same way,
and what a failure to reach the database means.

    create_engine            an async engine (asyncpg) whose pool tests a connection
                             before handing it out only when the connection sat idle a while
    is_unavailable           a driver error says PostgreSQL could not serve the work now
    database_unavailable     the DatabaseUnavailable to raise for it, after one warning line
    translating_unavailable  database work whose unavailability raises DatabaseUnavailable,
                             which every HTTP service answers with a 503 and Retry-After
                             (interchange_common.problems)

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

Unavailable is narrower than failed: a statement PostgreSQL refused (bad SQL, a broken
constraint, a value it cannot store) is a bug or the caller's to handle, and sending it
again changes nothing; it passes through ``translating_unavailable`` as it is.
"""

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from interchange_common.errors import DatabaseUnavailable

PING_AFTER_IDLE_SECONDS = 5.0
_CHECKED_IN_AT = "interchange_checked_in_at"
_log = logging.getLogger("interchange.database")
# SQLSTATEs of a server that cannot take the work, whatever the work: class 08
# (connection exception), class 53 (insufficient resources: 53300 is too many
# connections), and 57P01-57P03 (shutting down, crashed, starting up).
_UNAVAILABLE_CLASSES = frozenset({"08", "53"})
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03"})


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


def _sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error, raw (asyncpg) or wrapped by SQLAlchemy."""
    for candidate in (error, getattr(error, "orig", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def is_unavailable(error: BaseException) -> bool:
    """``error`` says PostgreSQL could not serve the work now, so that the same request
    may succeed later: no connection (refused, timed out, lost on the way), too many
    connections, a server shutting down or starting up, or no connection free in the
    pool in time."""
    # asyncpg raises a refused or timed-out connect unwrapped (TimeoutError is an
    # OSError); the pool raises its own TimeoutError when no connection came free.
    if isinstance(error, OSError | PoolTimeout):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    code = _sqlstate(error)
    return code is not None and (code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_STATES)


def database_unavailable(*, action: str, error: BaseException) -> DatabaseUnavailable:
    """The DatabaseUnavailable to raise from ``error``, logged as one warning line: what
    was being done, the driver error's class and SQLSTATE; never its text, which may
    hold the statement and its parameters."""
    _log.warning(
        "database unavailable", extra={"action": action, "error": type(error).__name__, "sqlstate": _sqlstate(error)}
    )
    return DatabaseUnavailable(f"could not {action}")


@contextlib.contextmanager
def translating_unavailable(*, action: str) -> Iterator[None]:
    """Database work (``action`` says what: "read the order") whose failure to reach
    PostgreSQL raises DatabaseUnavailable; any other error passes as it is."""
    try:
        yield
    except Exception as e:
        if not is_unavailable(e):
            raise
        raise database_unavailable(action=action, error=e) from e
