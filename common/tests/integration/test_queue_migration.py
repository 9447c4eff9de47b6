"""The classic retry queues of before, emptied into their quorum successors against the
real RabbitMQ: several instances starting at once, one holding the lock, and the
consumer doing it by itself at start-up."""

import asyncio
import uuid

import aio_pika
import orjson
import pytest

from devstack.testing import delete_exchange, eventually, run_id
from interchange_common.messaging import (
    ATTEMPT_HEADER,
    Consumer,
    ConsumerTopology,
    declare_consumer,
    declare_exchange,
    migrate_retry_queues,
    publish,
    retry_queue_moves,
)
from interchange_common.tasks import background

pytestmark = pytest.mark.integration

WAIT = 600.0  # seconds a message waits in a retry queue here: longer than any test


@pytest.fixture
async def topology(infra):
    name = f"ic-it-mig-{run_id()}"
    topology = ConsumerTopology(
        exchange=f"{name}.events", queue=f"{name}.q", bindings=("order.*",), retry_delays=(WAIT, WAIT, WAIT)
    )
    yield topology
    connection = await aio_pika.connect(infra.rabbitmq_url)
    channel = await connection.channel()
    olds = [move.source for move in retry_queue_moves(topology)]
    news = [topology.retry_queue(attempt) for attempt in range(1, topology.max_attempts)]
    for queue in (topology.queue, topology.dead_letter_queue, *olds, *news):
        await channel.queue_delete(queue)
    await connection.close()
    await delete_exchange(amqp_url=infra.rabbitmq_url, exchange=topology.exchange)


@pytest.fixture
async def channel(infra):
    connection = await aio_pika.connect(infra.rabbitmq_url)
    yield await connection.channel(publisher_confirms=True, on_return_raises=True)
    await connection.close()


async def previous_topology(channel, topology) -> dict[str, list[str]]:
    """The topology as the previous version declared it (classic retry queues named
    <queue>.retry.N), with messages in every queue; the ids in each."""
    exchange = await declare_exchange(channel=channel, name=topology.exchange)
    main = await channel.declare_queue(topology.queue, durable=True)
    await main.bind(exchange, routing_key="order.*")
    await channel.declare_queue(topology.dead_letter_queue, durable=True)
    ids: dict[str, list[str]] = {topology.queue: [], topology.dead_letter_queue: []}
    for attempt, move in enumerate(retry_queue_moves(topology), start=1):
        arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": topology.queue}
        await channel.declare_queue(move.source, durable=True, arguments=arguments)
        ids[move.source] = [str(uuid.uuid4()) for _ in range(4)]
        for message_id in ids[move.source]:
            await publish(
                exchange=channel.default_exchange,
                routing_key=move.source,
                body=orjson.dumps({"id": message_id}),
                message_id=message_id,
                headers={ATTEMPT_HEADER: attempt},
                expiration_seconds=WAIT,
            )
    for queue, count, key in ((topology.queue, 3, "order.placed"), (topology.dead_letter_queue, 2, None)):
        for _ in range(count):
            message_id = str(uuid.uuid4())
            ids[queue].append(message_id)
            target = exchange if key else channel.default_exchange
            await publish(exchange=target, routing_key=key or queue, body=b"{}", message_id=message_id)
    return ids


async def drain(channel, queue_name) -> list[aio_pika.abc.AbstractIncomingMessage]:
    queue = await channel.get_queue(queue_name, ensure=False)
    messages = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        messages.append(message)
    return messages


async def depth(channel, queue_name) -> int:
    declared = await channel.declare_queue(queue_name, passive=True)
    return declared.declaration_result.message_count or 0


async def exists(infra, queue_name) -> bool:
    connection = await aio_pika.connect(infra.rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue_name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        await connection.close()
    return True


async def new_version_starts(infra, topology) -> int:
    """What a starting instance does: declare the topology, then move the old queues."""
    connection = await aio_pika.connect(infra.rabbitmq_url)
    try:
        await declare_consumer(channel=await connection.channel(), topology=topology)
    finally:
        await connection.close()
    return await migrate_retry_queues(amqp_url=infra.rabbitmq_url, topology=topology)


async def test_two_instances_starting_together_move_every_message_once(infra, channel, topology):
    before = await previous_topology(channel, topology)
    moved = await asyncio.gather(new_version_starts(infra, topology), new_version_starts(infra, topology))
    assert sum(moved) == 12  # 4 in each of the 3 retry queues, each moved by one of the two
    for attempt, move in enumerate(retry_queue_moves(topology), start=1):
        assert not await exists(infra, move.source)
        messages = await drain(channel, move.target)
        assert sorted(str(m.message_id) for m in messages) == sorted(before[move.source])
        # Still a retry: its attempt count, and a delay to wait out again in the new queue.
        assert {(m.headers[ATTEMPT_HEADER], m.expiration, m.delivery_mode) for m in messages} == {
            (attempt, WAIT, aio_pika.DeliveryMode.PERSISTENT)
        }
    # The consumer's queue and the dead-letter queue kept their type, name and messages.
    for queue in (topology.queue, topology.dead_letter_queue):
        assert sorted(str(m.message_id) for m in await drain(channel, queue)) == sorted(before[queue])


async def test_an_instance_that_finds_the_move_under_way_leaves_it_to_the_other(infra, channel, topology):
    before = await previous_topology(channel, topology)
    other = await aio_pika.connect(infra.rabbitmq_url)
    try:
        # Another instance holds the lock (its connection ending releases it, even a crash).
        await (await other.channel()).declare_queue(f"{topology.queue}.migrating", exclusive=True)
        assert await new_version_starts(infra, topology) == 0
        for move in retry_queue_moves(topology):
            assert await depth(channel, move.source) == len(before[move.source])
            assert await depth(channel, move.target) == 0
    finally:
        await other.close()
    assert await new_version_starts(infra, topology) == 12


async def test_the_consumer_moves_the_old_retry_queues_when_it_starts(infra, channel, topology):
    short = ConsumerTopology(
        exchange=topology.exchange, queue=topology.queue, bindings=topology.bindings, retry_delays=(0.5, 0.5, 0.5)
    )
    before = await previous_topology(channel, topology)  # their messages wait WAIT seconds: moved, not expired
    handled: list[str] = []

    async def handler(delivery):
        handled.append(delivery.message_id)

    consumer = Consumer(amqp_url=infra.rabbitmq_url, topology=short, handler=handler)
    async with background(consumer.run()):

        async def gone():
            return not any([await exists(infra, move.source) for move in retry_queue_moves(short)])

        async def all_handled():
            return len(handled) >= len(before[topology.queue])

        await eventually(gone, timeout=15, what="the old retry queues emptied and deleted")
        await eventually(all_handled, timeout=15, what="the queue's own messages")
    assert sorted(handled) == sorted(before[topology.queue])
    for move in retry_queue_moves(short):
        assert sorted(str(m.message_id) for m in await drain(channel, move.target)) == sorted(before[move.source])
