"""RabbitMQ beyond the common Consumer: the dead-letter queue and replays.

DeadLetterConsumer   reads ``<queue>.dead`` and stores each message as a dead letter
                     (with its error, attempt count and failure timeline from the
                     headers), acking only after the row is committed
AmqpRepublisher      sends a dead letter back to the consumer's queue (default
                     exchange, persistent, publisher confirms, mandatory) as a first
                     attempt: same message id and routing key, no failure headers
"""

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from prometheus_client import Counter

from interchange_common.messaging import (
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    ConsumerTopology,
    PublishFailed,
    declare_consumer,
    publish,
)
from interchange_common.tasks import run_forever
from notification_service.adapters.errors import ReplayFailed
from notification_service.domain.model import DeadLetter

_log = logging.getLogger(__name__)

# Headers that describe past failures: a replayed message starts again without them.
_FAILURE_HEADERS = frozenset({ATTEMPT_HEADER, ERROR_HEADER, FAILED_AT_HEADER, DEAD_AT_HEADER})

DEAD_LETTERS_STORED = Counter("notification_dead_letters_stored_total", "Dead messages stored for inspection")
REPLAYS = Counter("notification_dead_letters_replayed_total", "Dead letters sent back to their queue")


def _clean_text(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL; a header must not make the row unstorable.
    return value.replace("\x00", "\ufffd")


def json_safe(value: Any) -> Any:
    """An AMQP header value as JSON: bytes decoded, times in RFC 3339, decimals and
    non-finite floats as strings."""
    if isinstance(value, bytes | bytearray | memoryview):
        return _clean_text(bytes(value).decode("utf-8", errors="replace"))
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON (and jsonb) has no NaN or infinity
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {_clean_text(str(key)): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return _clean_text(str(value))


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


class DeadMessage(Protocol):
    """What dead_letter_of reads of an incoming message (aio_pika's AbstractIncomingMessage)."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...


def dead_letter_of(message: DeadMessage, *, now: datetime) -> DeadLetter:
    """A message from the dead-letter queue, as a dead letter to store."""
    headers = json_safe(dict(message.headers or {}))
    attempts = headers.get(ATTEMPT_HEADER)
    timeline = headers.get(FAILED_AT_HEADER)
    failed_at = tuple(at for at in map(_time, timeline if isinstance(timeline, list) else []) if at is not None)
    return DeadLetter(
        id=uuid.uuid4(),
        message_id=_clean_text(str(message.message_id or "")),
        routing_key=_clean_text(str(headers.get(ORIGINAL_ROUTING_KEY_HEADER) or message.routing_key or "")),
        body=bytes(message.body),
        headers=headers,
        correlation_id=_clean_text(str(message.correlation_id)) if message.correlation_id else None,
        error=str(headers.get(ERROR_HEADER) or ""),
        attempts=attempts if isinstance(attempts, int) else 0,
        failed_at=failed_at,
        # The dead-at header makes a redelivered dead message recognisable as the same one.
        dead_at=_time(headers.get(DEAD_AT_HEADER)) or _time(message.timestamp) or now,
        stored_at=now,
    )


def replay_headers(dead_letter: DeadLetter) -> dict[str, Any]:
    headers = {key: value for key, value in dead_letter.headers.items() if key not in _FAILURE_HEADERS}
    headers[ORIGINAL_ROUTING_KEY_HEADER] = dead_letter.routing_key
    return headers


class DeadLetterConsumer:
    def __init__(
        self,
        *,
        amqp_url: str,
        topology: ConsumerTopology,
        record: Callable[[DeadLetter], Awaitable[None]],
        prefetch: int = 20,
    ) -> None:
        self._amqp_url = amqp_url
        self._topology = topology
        self._record = record
        self._prefetch = prefetch
        self.ready = asyncio.Event()

    async def run(self) -> None:
        await run_forever(name=f"consumer of {self._topology.dead_letter_queue}", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        connection = await aio_pika.connect(self._amqp_url)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            # The same declarations as the main consumer: whichever starts first makes them.
            await declare_consumer(channel=channel, topology=self._topology)
            queue = await channel.declare_queue(self._topology.dead_letter_queue, durable=True)
            connected()
            self.ready.set()
            async with queue.iterator() as messages:
                async for message in messages:
                    dead_letter = dead_letter_of(message, now=datetime.now(UTC))
                    # A failure here ends the session unacked: the broker keeps the message.
                    await self._record(dead_letter)
                    await message.ack()
                    DEAD_LETTERS_STORED.inc()
                    _log.warning(
                        "dead letter stored",
                        extra={
                            "message_id": dead_letter.message_id,
                            "routing_key": dead_letter.routing_key,
                            "attempts": dead_letter.attempts,
                        },
                    )
        finally:
            self.ready.clear()
            with contextlib.suppress(Exception):
                await connection.close()


class AmqpRepublisher:
    """One connection, opened on first use and again after any failure; replays are
    rare admin actions, so they take turns on it."""

    def __init__(self, *, amqp_url: str, queue: str, timeout_seconds: float = 10.0) -> None:
        self._amqp_url = amqp_url
        self._queue = queue
        self._timeout = timeout_seconds
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def republish(self, *, dead_letter: DeadLetter) -> None:
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    channel = await self._open()
                    await publish(
                        exchange=channel.default_exchange,
                        routing_key=self._queue,
                        body=dead_letter.body,
                        message_id=dead_letter.message_id,
                        headers=replay_headers(dead_letter),
                        correlation_id=dead_letter.correlation_id,
                    )
            except (PublishFailed, aio_pika.exceptions.AMQPException, OSError, TimeoutError) as e:
                await self._close()
                raise ReplayFailed(f"the broker did not take message {dead_letter.message_id}") from e
        REPLAYS.inc()
        _log.info("dead letter replayed", extra={"message_id": dead_letter.message_id, "queue": self._queue})

    async def _open(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            await self._close()
            self._connection = await aio_pika.connect(self._amqp_url)
            self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        return self._channel

    async def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def close(self) -> None:
        async with self._lock:
            await self._close()
