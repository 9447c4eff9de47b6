"""RabbitMQ for services: topology, publishing with confirms, consuming with retries.

    Topology           every exchange, queue and binding as data: declared by the
                       services, and written to infra/rabbitmq/definitions.json
    declare_consumer   a consumer's durable queue bound to a topic exchange, one retry
                       queue per delay (a failed message waits there, then the broker
                       routes it back to the main queue), and a dead-letter queue.
                       The same declarations on every start: idempotent.
                       The retry queues are quorum queues: see consumer_topology for
                       why, and for how the classic ones of before are emptied.
    publish            persistent, publisher confirms, mandatory: an unroutable
                       message raises instead of vanishing.
    Consumer           runs the handler for each message and acks only after the
                       handler returned (its effect is committed). A failure goes to
                       the next retry queue (attempt count and error in the headers,
                       delay with jitter), after the last attempt to the dead-letter
                       queue. Nothing is acked and dropped; other messages keep
                       flowing while one waits for its retry, and a handler that
                       hangs times out and counts as failed. Reconnects by itself,
                       and on each start moves what the previous topology's retry
                       queues still hold into this one's (queue_migration).
                       Reports how late messages are handled (their timestamp is
                       whole seconds) and, every few seconds, how many wait in the
                       queue and in its dead-letter queue.

Delivery is at least once; handlers make effects idempotent (by message id).
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from prometheus_client import Gauge

from interchange_common import tracing
from interchange_common.errors import InterchangeCommonError
from interchange_common.queue_migration import Move, move_queues
from interchange_common.tasks import background, run_forever

_log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-attempt"  # failed deliveries so far
ERROR_HEADER = "x-last-error"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
DEAD_AT_HEADER = "x-dead-at"
FAILED_AT_HEADER = "x-failed-at"  # when each failed attempt ended: the retry timeline
_MAX_ERROR_LENGTH = 500


class PublishFailed(InterchangeCommonError):
    """The broker did not confirm a message, or could not route it."""


@dataclass(frozen=True, slots=True)
class ConsumerTopology:
    """Names and delays of one consumer's queues."""

    exchange: str
    queue: str
    bindings: tuple[str, ...]
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)  # seconds before attempts 2, 3, 4 …
    jitter: float = 0.2  # each delay varies by up to ±20%

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    def retry_queue(self, attempt: int) -> str:
        # A new name for a new type: the classic <queue>.retry.N of before cannot become
        # a quorum queue in place (retry_queue_moves empties them into these).
        return f"{self.queue}.retry.{attempt}.quorum"

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1


_UNROUTED_MAX = 100_000


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: str  # "topic" or "fanout"
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindingSpec:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Topology:
    """Every exchange, queue and binding, all durable: what the services declare at
    start-up and what infra/rabbitmq/definitions.json holds, from this one source."""

    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    bindings: tuple[BindingSpec, ...] = ()

    def __add__(self, other: "Topology") -> "Topology":
        def merged(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
            return a + tuple(item for item in b if item not in a)

        return Topology(
            exchanges=merged(self.exchanges, other.exchanges),
            queues=merged(self.queues, other.queues),
            bindings=merged(self.bindings, other.bindings),
        )

    def definitions(self) -> dict[str, Any]:
        """RabbitMQ's definitions format (rabbitmqctl import_definitions, POST /api/definitions)."""
        return {
            "vhosts": [{"name": "/"}],
            "exchanges": [
                {
                    "name": e.name,
                    "vhost": "/",
                    "type": e.type,
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": dict(e.arguments),
                }
                for e in self.exchanges
            ],
            "queues": [
                {"name": q.name, "vhost": "/", "durable": True, "auto_delete": False, "arguments": dict(q.arguments)}
                for q in self.queues
            ],
            "bindings": [
                {
                    "source": b.exchange,
                    "vhost": "/",
                    "destination": b.queue,
                    "destination_type": "queue",
                    "routing_key": b.routing_key,
                    "arguments": {},
                }
                for b in self.bindings
            ],
        }


def exchange_topology(name: str) -> Topology:
    """A topic exchange whose unroutable messages go to ``<name>.unrouted`` (nothing
    recorded is dropped because nobody listens yet). When that queue is full it
    refuses new messages (the publisher's confirm fails and it retries later) rather
    than drop the oldest."""
    unrouted = f"{name}.unrouted"
    return Topology(
        exchanges=(
            ExchangeSpec(unrouted, "fanout"),
            ExchangeSpec(name, "topic", {"alternate-exchange": unrouted}),
        ),
        queues=(QueueSpec(unrouted, {"x-max-length": _UNROUTED_MAX, "x-overflow": "reject-publish"}),),
        bindings=(BindingSpec(unrouted, unrouted, ""),),
    )


# Only the retry queues hand messages on by themselves: the broker dead-letters each
# expired message back to the consumer's queue. From a classic queue that hop is at
# most once (the message leaves the retry queue before the target has stored it: lost
# if the broker dies in between, dropped if the target refuses it or is missing). A
# quorum queue with at-least-once dead-lettering keeps it until the target confirms,
# and sends it again (every few minutes, and when the broker starts). That strategy
# needs reject-publish (with drop-head RabbitMQ falls back to at most once); with no
# length limit nothing is refused. Quorum queues have per-message TTL and at-least-once
# dead-lettering since RabbitMQ 3.10.
#
# The consumer's queue and the dead-letter queue stay classic: neither dead-letters
# anything (the consumer moves a failed message itself, with confirms, then acks), and
# as quorum queues they would count returns against a delivery limit: a message the
# consumer returned unacked too often (each crash counts; the dead-letter consumer
# returns its messages while PostgreSQL is down) would be dropped from the dead-letter
# queue, or dead-lettered out of the consumer's queue through no fault of its own.
#
# Nobody consumes a retry queue and the consumer counts attempts itself (x-attempt):
# only someone reading a retry queue by hand (the management UI's get requeues) makes
# the broker count. Past the limit a message is dead-lettered as if it had expired, to
# the consumer's queue: an early attempt, never a drop. RabbitMQ 4 defaults the limit
# to 20, 3.10 to none: set, both behave alike. Never -1: no limit on 4.x, but 3.10
# drops a message at its first return.
_RETRY_DELIVERY_LIMIT = 20
_RETRY_QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
    "x-delivery-limit": _RETRY_DELIVERY_LIMIT,
}


def consumer_topology(topology: ConsumerTopology) -> Topology:
    """A consumer's durable queue bound to the exchange, one retry queue per delay
    (no consumer reads it: a message waits out its expiration, then is dead-lettered
    through the default exchange straight back to the queue), and a dead-letter queue."""
    retries = tuple(
        QueueSpec(
            topology.retry_queue(attempt),
            {**_RETRY_QUEUE_ARGUMENTS, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": topology.queue},
        )
        for attempt in range(1, topology.max_attempts)
    )
    return exchange_topology(topology.exchange) + Topology(
        queues=(QueueSpec(topology.queue), *retries, QueueSpec(topology.dead_letter_queue)),
        bindings=tuple(BindingSpec(topology.exchange, topology.queue, key) for key in topology.bindings),
    )


async def declare(*, channel: AbstractChannel, topology: Topology) -> None:
    """Declare everything (idempotent; RabbitMQ refuses a declaration whose arguments
    differ from the existing one's, so every service declares through here)."""
    exchanges = {}
    for spec in topology.exchanges:
        exchanges[spec.name] = await channel.declare_exchange(
            spec.name, aio_pika.ExchangeType(spec.type), durable=True, arguments=dict(spec.arguments)
        )
    queues = {}
    for queue in topology.queues:
        queues[queue.name] = await channel.declare_queue(queue.name, durable=True, arguments=dict(queue.arguments))
    for binding in topology.bindings:
        await queues[binding.queue].bind(exchanges[binding.exchange], routing_key=binding.routing_key)


async def declare_exchange(*, channel: AbstractChannel, name: str) -> AbstractExchange:
    await declare(channel=channel, topology=exchange_topology(name))
    return await channel.get_exchange(name, ensure=False)


async def declare_consumer(*, channel: AbstractChannel, topology: ConsumerTopology) -> AbstractQueue:
    await declare(channel=channel, topology=consumer_topology(topology))
    return await channel.get_queue(topology.queue, ensure=False)


def retry_queue_moves(topology: ConsumerTopology) -> tuple[Move, ...]:
    """Until the retry queues were quorum queues they were classic ones, named
    ``<queue>.retry.N``: each one's messages go to its successor."""
    return tuple(
        Move(source=f"{topology.queue}.retry.{attempt}", target=topology.retry_queue(attempt))
        for attempt in range(1, topology.max_attempts)
    )


async def migrate_retry_queues(*, amqp_url: str, topology: ConsumerTopology) -> int:
    """Empty the classic retry queues of before into the declared quorum ones and
    delete them (interchange_common.queue_migration); how many messages moved."""
    return await move_queues(amqp_url=amqp_url, moves=retry_queue_moves(topology), lock=f"{topology.queue}.migrating")


async def publish(
    *,
    exchange: AbstractExchange,
    routing_key: str,
    body: bytes,
    message_id: str,
    headers: Mapping[str, Any] | None = None,
    expiration_seconds: float | None = None,
    correlation_id: str | None = None,
) -> None:
    """Publish persistently and wait for the broker's confirm (the channel must have
    publisher confirms on); raise PublishFailed when it is nacked or unroutable."""
    message = aio_pika.Message(
        body=body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        headers=dict(headers or {}),
        expiration=expiration_seconds,
        correlation_id=correlation_id,
        timestamp=datetime.now(UTC),
    )
    try:
        await exchange.publish(message, routing_key=routing_key, mandatory=True)
    except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError) as e:
        raise PublishFailed(f"message {message_id} to {routing_key!r} was not confirmed") from e


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a handler sees it."""

    message_id: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any]
    attempt: int  # 1 for the first delivery

    def json(self) -> Any:
        return orjson.loads(self.body)


Handler = Callable[[Delivery], Awaitable[None]]


def _attempt_of(headers: Mapping[str, object] | None) -> int:
    """The attempt of a delivery with these headers, 1 for the first; a header that is
    not a sensible count (from a buggy or hostile publisher) counts as none."""
    failed = (headers or {}).get(ATTEMPT_HEADER, 0)
    return max(failed, 0) + 1 if isinstance(failed, int) and not isinstance(failed, bool) else 1


# A consumer that is not connected is seen here even where /health leaves it out (the
# gateway's revocations: RabbitMQ down delays them, it does not make the gateway unfit).
CONSUMER_CONNECTED = Gauge("messaging_consumer_connected", "1 while the queue's consumer is connected", ["queue"])
CONSUMER_LAG = Gauge(
    "messaging_consumer_lag_seconds", "Age of the message last handled (now minus its timestamp)", ["queue"]
)
QUEUE_MESSAGES = Gauge("messaging_queue_messages", "Messages ready in the queue", ["queue"])
DEAD_LETTER_MESSAGES = Gauge("messaging_dead_letter_messages", "Messages in the queue's dead-letter queue", ["queue"])


@dataclass
class Consumer:
    amqp_url: str
    topology: ConsumerTopology
    handler: Handler
    prefetch: int = 20
    # A handler that takes longer has failed (TimeoutError): the message goes down the
    # retry path and the queue moves on, instead of one hung call holding it for ever.
    handler_timeout_seconds: float = 30.0
    # How often the depths of the queue and of its dead-letter queue are asked for.
    depth_interval_seconds: float = 5.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # This queue's series, made once (on /metrics, at 0, from the start): labels()
        # validates and locks on every call, and the lag is set for every message.
        queue = self.topology.queue
        self._lag = CONSUMER_LAG.labels(queue=queue)
        self._depths: tuple[tuple[Gauge, str], ...] = (
            (QUEUE_MESSAGES.labels(queue=queue), queue),
            (DEAD_LETTER_MESSAGES.labels(queue=queue), self.topology.dead_letter_queue),
        )

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after any failure."""
        await run_forever(name=f"consumer of {self.topology.queue}", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await declare_consumer(channel=channel, topology=self.topology)
            connected()
            self.ready.set()
            CONSUMER_CONNECTED.labels(queue=self.topology.queue).set(1)
            async with (
                background(self._watch_depths(channel=channel), self._migrate()),
                queue.iterator() as messages,
            ):
                async for message in messages:
                    await self._handle(channel=channel, message=message)
        finally:
            self.ready.clear()
            CONSUMER_CONNECTED.labels(queue=self.topology.queue).set(0)
            with contextlib.suppress(Exception):
                await connection.close()

    async def _migrate(self) -> None:
        """Beside the consumption: the old retry queues keep handing their messages
        back meanwhile, and one that cannot be emptied now is tried at the next start."""
        try:
            await migrate_retry_queues(amqp_url=self.amqp_url, topology=self.topology)
        except Exception:  # the consumer runs on either way
            _log.exception("retry queue migration failed", extra={"queue": self.topology.queue})

    async def _watch_depths(self, *, channel: AbstractChannel) -> None:
        """Set the depth gauges now and every ``depth_interval_seconds``: a passive
        declare each, which answers with the count of ready messages."""
        queue = self.topology.queue
        while True:
            try:
                for gauge, name in self._depths:
                    declared = await channel.declare_queue(name, passive=True)
                    gauge.set(declared.declaration_result.message_count or 0)
            except Exception as e:  # the channel is going: the session ends with it
                _log.warning("queue depth unknown", extra={"queue": queue, "error": type(e).__name__})
            await asyncio.sleep(self.depth_interval_seconds)

    async def _handle(self, *, channel: AbstractChannel, message: AbstractIncomingMessage) -> None:
        if message.timestamp is not None:
            sent = message.timestamp if message.timestamp.tzinfo else message.timestamp.replace(tzinfo=UTC)
            self._lag.set(max(0.0, (datetime.now(UTC) - sent).total_seconds()))
        delivery = Delivery(
            message_id=str(message.message_id or ""),
            routing_key=str(message.headers.get(ORIGINAL_ROUTING_KEY_HEADER) or message.routing_key or ""),
            body=message.body,
            headers=dict(message.headers or {}),
            attempt=_attempt_of(message.headers),
        )
        # The processing span: the child of the publish that sent the message (its
        # traceparent header), so that what it causes joins the same trace.
        with tracing.span(
            f"process {self.topology.queue}",
            kind=tracing.SpanKind.CONSUMER,
            parent=delivery.headers.get(tracing.TRACEPARENT),
            root=True,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": self.topology.queue,
                "messaging.message.id": delivery.message_id,
                "messaging.rabbitmq.destination.routing_key": delivery.routing_key,
            },
        ) as span:
            try:
                async with asyncio.timeout(self.handler_timeout_seconds):
                    await self.handler(delivery)
            except Exception as e:  # a failing handler must not stop the others
                tracing.mark_failed(span, e)
                await self._fail(channel=channel, message=message, delivery=delivery, error=e)
            # Acked only now: after the effect (or after the failure was safely moved on).
            await message.ack()

    async def _fail(
        self, *, channel: AbstractChannel, message: AbstractIncomingMessage, delivery: Delivery, error: Exception
    ) -> None:
        detail = f"{type(error).__name__}: {error}"[:_MAX_ERROR_LENGTH]
        failed_at = delivery.headers.get(FAILED_AT_HEADER)
        timeline = [*failed_at] if isinstance(failed_at, list) else []
        headers = {
            **delivery.headers,
            ATTEMPT_HEADER: delivery.attempt,
            ERROR_HEADER: detail,
            ORIGINAL_ROUTING_KEY_HEADER: delivery.routing_key,
            FAILED_AT_HEADER: [*timeline, datetime.now(UTC).isoformat()],
        }
        topology = self.topology
        if delivery.attempt < topology.max_attempts:
            delay = topology.retry_delays[delivery.attempt - 1]
            delay *= 1 + random.uniform(-topology.jitter, topology.jitter)  # noqa: S311  # jitter
            target, expiration = topology.retry_queue(delivery.attempt), delay
            _log.warning(
                "message failed, retrying",
                extra={"queue": topology.queue, "message_id": delivery.message_id, "attempt": delivery.attempt},
            )
        else:
            headers[DEAD_AT_HEADER] = datetime.now(UTC).isoformat()
            target, expiration = topology.dead_letter_queue, None
            _log.error(
                "message dead-lettered",
                extra={"queue": topology.queue, "message_id": delivery.message_id, "attempts": delivery.attempt},
            )
        try:
            await publish(
                exchange=channel.default_exchange,
                routing_key=target,
                body=message.body,
                message_id=delivery.message_id,
                headers=headers,
                expiration_seconds=expiration,
                correlation_id=message.correlation_id,
            )
        except PublishFailed:
            if target == topology.dead_letter_queue:
                raise  # the broker itself is in trouble: unacked, the message comes back
            # The retry path is broken (a queue deleted by hand, say): the message must
            # not come back to the head of the queue for ever, so it is dead-lettered.
            _log.exception("retry queue unusable, dead-lettering", extra={"queue": target})
            await publish(
                exchange=channel.default_exchange,
                routing_key=topology.dead_letter_queue,
                body=message.body,
                message_id=delivery.message_id,
                headers={**headers, DEAD_AT_HEADER: datetime.now(UTC).isoformat()},
                correlation_id=message.correlation_id,
            )
