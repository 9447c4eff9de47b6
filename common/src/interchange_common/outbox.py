"""Transactional outbox: a message is committed with the change that caused it, and
published afterwards. No change without its message, no message without its change.

    outbox        the table (the owning service's migration creates it)
    enqueue       inside the caller's transaction: one row per message, and a NOTIFY
                  that wakes the relay when the transaction commits
    OutboxRelay   publishes rows in insertion order (persistent, publisher confirms,
                  mandatory) and deletes each only once the broker confirmed it; one
                  relay per database (advisory lock); survives any failure and starts
                  again from whatever is still in the table. At least once: the
                  message id lets consumers drop duplicates.
    Backlog       the gauges of an outbox's backlog (this one's, event-store's):
                  set from the rows a relay reads at each pass, and once before it
                  reaches the broker, so that a backlog growing while the broker is
                  down shows.

Order: rows about one aggregate are written under its row lock, so they are inserted,
and therefore published, in the order of the changes.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson
from prometheus_client import Gauge
from sqlalchemy import BigInteger, Column, DateTime, Identity, MetaData, Table, Text, Uuid, func, insert, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from interchange_common import tracing
from interchange_common.messaging import declare_exchange, publish
from interchange_common.tasks import run_forever, wait_alive

_log = logging.getLogger(__name__)

CHANNEL = "outbox"

metadata = MetaData()
outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("message_id", Uuid, nullable=False, unique=True),
    Column("exchange", Text, nullable=False),
    Column("routing_key", Text, nullable=False),
    Column("body", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The span that wrote it (W3C traceparent): its publish continues that trace.
    Column("traceparent", Text, nullable=True),
)


async def enqueue(
    conn: AsyncConnection, *, exchange: str, routing_key: str, message_id: uuid.UUID, body: dict[str, Any]
) -> None:
    await conn.execute(
        insert(outbox).values(
            message_id=message_id,
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            traceparent=tracing.current_traceparent(),
        )
    )
    # Delivered at commit, and only if the transaction commits.
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


BACKLOG = Gauge("outbox_backlog_messages", "Messages written but not yet confirmed by the broker", ["outbox"])
LAG = Gauge("outbox_lag_seconds", "Age of the oldest message not yet published (0: none waits)", ["outbox"])


class Backlog:
    """The backlog gauges of the outbox ``name``, on /metrics (at 0) from the start."""

    def __init__(self, *, name: str) -> None:
        self._messages = BACKLOG.labels(outbox=name)
        self._lag = LAG.labels(outbox=name)

    def waiting(self, *, messages: int, oldest: datetime | None) -> None:
        """``messages`` wait, the oldest of them written at ``oldest`` (None: none)."""
        self._messages.set(messages)
        self._lag.set(0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds()))


# The next rows in order, and the last seq written: past a full batch the backlog is
# reckoned from the seqs (an upper bound: a rolled-back write leaves a gap).
_NEXT = """
SELECT seq, message_id, exchange, routing_key, body::text AS body, created_at, traceparent,
       (SELECT max(seq) FROM outbox) AS last_seq
  FROM outbox ORDER BY seq LIMIT $1
"""


class OutboxRelay:
    def __init__(self, *, name: str, dsn: str, amqp_url: str, lock_id: int, batch: int = 100) -> None:
        self._backlog = Backlog(name=name)
        self._dsn = dsn.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._amqp_url = amqp_url
        self._lock_id = lock_id
        self._batch = batch
        self._wake = asyncio.Event()

    async def run(self) -> None:
        await run_forever(name="outbox relay", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        conn = await asyncpg.connect(self._dsn)
        broker: aio_pika.abc.AbstractConnection | None = None
        try:
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
            # A closed connection wakes the loop, whose next query then ends the session.
            conn.add_termination_listener(lambda _: self._wake.set())
            await conn.execute("SELECT pg_advisory_lock($1)", self._lock_id)  # waits while another relay runs
            await self._next(conn)  # measured even when the broker cannot be reached
            broker = await aio_pika.connect(self._amqp_url)
            channel = await broker.channel(publisher_confirms=True, on_return_raises=True)
            connected()
            await self._relay_forever(conn=conn, channel=channel)
        finally:
            if broker is not None:
                with contextlib.suppress(Exception):
                    await broker.close()
            conn.terminate()

    async def _relay_forever(self, *, conn: asyncpg.Connection, channel: aio_pika.abc.AbstractChannel) -> None:
        exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        while True:
            self._wake.clear()
            rows = await self._next(conn)
            for row in rows:
                if row["exchange"] not in exchanges:
                    exchanges[row["exchange"]] = await declare_exchange(channel=channel, name=row["exchange"])
                body = orjson.loads(row["body"])
                with tracing.continued(row["traceparent"]):  # the trace of the change that wrote it
                    await publish(
                        exchange=exchanges[row["exchange"]],
                        routing_key=row["routing_key"],
                        body=orjson.dumps(body),
                        message_id=str(row["message_id"]),
                        correlation_id=body.get("correlation_id") if isinstance(body, dict) else None,
                    )
                await conn.execute("DELETE FROM outbox WHERE seq = $1", row["seq"])
            if len(rows) < self._batch:
                self._backlog.waiting(messages=0, oldest=None)
                await wait_alive(conn, self._wake)

    async def _next(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        """The next batch of rows; sets the backlog gauges from them."""
        rows: list[asyncpg.Record] = await conn.fetch(_NEXT, self._batch)
        if len(rows) < self._batch:
            self._backlog.waiting(messages=len(rows), oldest=rows[0]["created_at"] if rows else None)
        else:
            self._backlog.waiting(messages=rows[0]["last_seq"] - rows[0]["seq"] + 1, oldest=rows[0]["created_at"])
        return rows
