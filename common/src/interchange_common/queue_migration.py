"""Moving what an old queue holds into its successor, for a queue whose type changes.

RabbitMQ cannot change a queue's type (or arguments) in place, so the new queue gets
a new name and the old one is emptied into it:

    move_queues   for each move whose source still exists: every message is taken
                  from the source (basic.get), published to the target (persistent,
                  publisher confirms, mandatory) and acked on the source only after
                  its confirm; then the source is deleted if empty. A message that
                  arrived meanwhile (an instance of the previous version still
                  publishing there) fails that delete: another round.

One mover at a time. A delete if-empty counts ready messages only, so one mover's
delete would not wait for another's unacked messages, which a crash would then
return to a queue that is gone. The lock is an exclusive queue: the broker removes it
with its connection, a crashed holder's too. An instance that finds it taken leaves
the work to the holder and carries on. A mover that dies returns its unacked
messages to the source (for those already confirmed, a duplicate: delivery is at
least once), and the next start moves them. Nothing waits for the move: the source
keeps working as it did until it is deleted.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from interchange_common.errors import InterchangeCommonError

_log = logging.getLogger(__name__)

_BATCH = 100  # messages taken before their confirms are awaited together
_ROUNDS = 5  # deletes refused because the source was published to meanwhile, before giving up until the next start


class MoveFailed(InterchangeCommonError):
    """The broker did not confirm a moved message, or could not route it to its target."""


@dataclass(frozen=True, slots=True)
class Move:
    source: str  # the old queue, deleted once empty
    target: str  # its successor, declared already


async def move_queues(*, amqp_url: str, moves: Sequence[Move], lock: str) -> int:
    """Empty each existing source into its target and delete it; returns how many
    messages were moved (0 also when another instance holds ``lock``)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        if not await _existing(connection, moves):  # the usual case, and no lock taken for it
            return 0
        if not await _locked(connection, lock):
            _log.info("queue move left to another instance", extra={"lock": lock})
            return 0
        moved = 0
        for move in await _existing(connection, moves):  # again: the last holder may have finished
            moved += await _move(connection, move)
        return moved
    finally:
        # Releases the lock; whatever is still unacked goes back to its source.
        await connection.close()


async def _existing(connection: AbstractConnection, moves: Sequence[Move]) -> list[Move]:
    found = []
    for move in moves:
        channel = await connection.channel()
        try:
            await channel.declare_queue(move.source, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            continue  # the broker closed that channel
        await channel.close()
        found.append(move)
    return found


async def _locked(connection: AbstractConnection, lock: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(lock, exclusive=True)
    except aiormq.exceptions.ChannelLockedResource:
        return False
    return True


async def _move(connection: AbstractConnection, move: Move) -> int:
    moved = 0
    for _ in range(_ROUNDS):
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        source = await channel.get_queue(move.source, ensure=False)
        while batch := await _take(source):
            await asyncio.gather(
                *(_forward(message, exchange=channel.default_exchange, target=move.target) for message in batch)
            )
            moved += len(batch)
        try:
            await channel.queue_delete(move.source, if_empty=True)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            continue  # published to meanwhile (the broker closed that channel)
        await channel.close()
        _log.info("queue moved", extra={"source": move.source, "target": move.target, "messages": moved})
        return moved
    _log.warning(
        "queue still in use, moved again at the next start",
        extra={"source": move.source, "target": move.target, "messages": moved},
    )
    return moved


async def _take(source: AbstractQueue) -> list[AbstractIncomingMessage]:
    batch: list[AbstractIncomingMessage] = []
    while len(batch) < _BATCH and (message := await source.get(no_ack=False, fail=False)) is not None:
        batch.append(message)
    return batch


async def _forward(message: AbstractIncomingMessage, *, exchange: AbstractExchange, target: str) -> None:
    copy = aio_pika.Message(
        body=message.body,
        headers=dict(message.headers),
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        # A message waiting out a delay starts it again: later, never earlier.
        expiration=message.expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        # No user_id: the broker refuses one that is not this connection's user.
    )
    try:
        await exchange.publish(copy, routing_key=target, mandatory=True)
    except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError) as e:
        raise MoveFailed(f"message {message.message_id} to {target!r} was not confirmed") from e
    await message.ack()
