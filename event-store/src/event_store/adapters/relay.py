"""Publishes every recorded event to RabbitMQ. The events table is the outbox.

The relay reads events in global order from its checkpoint, publishes each to the
topic exchange (routing key = event type, persistent, publisher confirms,
mandatory: an unroutable message raises), and moves the checkpoint only past
events the broker has confirmed. One relay runs at a time across instances (a
session advisory lock), so order is kept; whatever dies (relay, broker, service),
the next relay starts again from the checkpoint. Delivery is at least once:
consumers deduplicate by message id, which is the event id.

Events no queue is bound for go to the exchange's alternate exchange
(``<exchange>.unrouted``) instead of coming back: nothing recorded is dropped
because nobody listens yet.

The backlog (interchange_common.outbox.Backlog, outbox "event-store") is what lies
past the checkpoint, measured from each page read: counted when the page holds it
all, else from the last position given; and once before the broker is reached.
"""

import contextlib
import logging
from collections.abc import Callable

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractExchange

from event_store.domain.model import Page
from event_store.domain.ports import EventStorage
from interchange_common import tracing
from interchange_common.events import RecordedEvent
from interchange_common.messaging import PublishFailed, declare_exchange
from interchange_common.outbox import Backlog
from interchange_common.tasks import run_forever

_log = logging.getLogger(__name__)

RELAY_LOCK = 0x65766E74_72656C00  # "evnt" "rel": one relay per database
CHECKPOINT = "rabbitmq"
OUTBOX = "event-store"
_LAST_POSITION = "SELECT position + events - 1 FROM commits WHERE position IS NOT NULL ORDER BY position DESC LIMIT 1"


def to_message(event: RecordedEvent) -> aio_pika.Message:
    metadata = event.metadata
    return aio_pika.Message(
        body=orjson.dumps(event.as_json()),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.id),
        type=event.type,
        timestamp=event.recorded_at,
        app_id="event-store",
        correlation_id=str(metadata.get("correlation_id", "")) or None,
        headers={"stream_id": event.stream_id, "version": event.version, "position": event.position or 0},
    )


class RabbitMQRelay:
    def __init__(self, *, dsn: str, amqp_url: str, exchange: str, storage: EventStorage, batch: int) -> None:
        self._dsn = dsn
        self._amqp_url = amqp_url
        self._exchange = exchange
        self._storage = storage
        self._batch = batch
        self._backlog = Backlog(name=OUTBOX)

    async def run(self) -> None:
        await run_forever(name="relay", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        lock = await asyncpg.connect(self._dsn)
        connection: aio_pika.abc.AbstractConnection | None = None
        try:
            await lock.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK)  # waits while another relay runs
            # Measured even when the broker cannot be reached.
            await self._next_page(lock=lock, position=await self._checkpoint(lock))
            connection = await aio_pika.connect(self._amqp_url)
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await declare_exchange(channel=channel, name=self._exchange)
            _log.info("relay publishing", extra={"exchange": self._exchange})
            connected()
            await self._publish_forever(lock=lock, exchange=exchange)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
            lock.terminate()  # never waits on a connection that may be broken

    async def _publish_forever(self, *, lock: asyncpg.Connection, exchange: AbstractExchange) -> None:
        position = await self._checkpoint(lock)
        signal = self._storage.sequenced
        while True:
            seen = signal.generation
            page = await self._next_page(lock=lock, position=position)
            for event in page.events:
                try:
                    # Waits for the broker's confirm; a nack or a return raises. In the
                    # trace of the append that recorded the event: aio-pika's
                    # instrumentation makes the publish span there and sends it along.
                    with tracing.continued(event.metadata.get(tracing.TRACEPARENT)):
                        await exchange.publish(to_message(event), routing_key=event.type, mandatory=True)
                except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError) as e:
                    raise PublishFailed(f"event {event.id} was not confirmed") from e
            if page.events:
                position = page.events[-1].position or position
                await lock.execute(
                    "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    CHECKPOINT,
                    position,
                )
            if page.end:
                self._backlog.waiting(messages=0, oldest=None)
                await signal.wait(after=seen)

    async def _checkpoint(self, lock: asyncpg.Connection) -> int:
        return int(await lock.fetchval("SELECT position FROM checkpoints WHERE name = $1", CHECKPOINT) or 0)

    async def _next_page(self, *, lock: asyncpg.Connection, position: int) -> Page:
        """The next page of events past ``position``; sets the backlog gauges."""
        page = await self._storage.read_all(start=position + 1, limit=self._batch)
        waiting = len(page.events) if page.end else int(await lock.fetchval(_LAST_POSITION) or 0) - position
        self._backlog.waiting(messages=waiting, oldest=page.events[0].recorded_at if page.events else None)
        return page
