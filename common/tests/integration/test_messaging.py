"""Consumer topology, retries and dead letters against the real RabbitMQ."""

import asyncio
import contextlib
import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import orjson
import pytest
from prometheus_client import REGISTRY

from devstack.testing import delete_exchange, eventually, run_id
from interchange_common.messaging import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    Consumer,
    ConsumerTopology,
    Delivery,
    PublishFailed,
    declare_consumer,
    declare_exchange,
    publish,
)
from interchange_common.tasks import background

pytestmark = pytest.mark.integration


@pytest.fixture
async def topology(infra):
    name = f"ic-it-msg-{run_id()}"
    topology = ConsumerTopology(
        exchange=f"{name}.events", queue=f"{name}.q", bindings=("order.*",), retry_delays=(0.2, 0.6, 1.2), jitter=0.1
    )
    yield topology
    connection = await aio_pika.connect(infra.rabbitmq_url)
    channel = await connection.channel()
    for queue in (topology.queue, topology.dead_letter_queue, *map(topology.retry_queue, range(1, 4))):
        await channel.queue_delete(queue)
    await delete_exchange(amqp_url=infra.rabbitmq_url, exchange=topology.exchange)
    await connection.close()


@pytest.fixture
async def channel(infra):
    connection = await aio_pika.connect(infra.rabbitmq_url)
    yield await connection.channel(publisher_confirms=True, on_return_raises=True)
    await connection.close()


class Recorder:
    """A handler that records every delivery and fails for the ids it is told to."""

    def __init__(self, *, fail_times: dict[str, int] | None = None):
        self.deliveries: list[tuple[float, Delivery]] = []
        self.fail_times = fail_times or {}
        self.changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append((time.monotonic(), delivery))
        self.changed.set()
        if self.fail_times.get(delivery.message_id, 0) >= delivery.attempt:
            raise RuntimeError(f"cannot handle {delivery.message_id}")

    def of(self, message_id):
        return [(at, d) for at, d in self.deliveries if d.message_id == message_id]

    async def until(self, condition, *, timeout):
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def consuming(infra, topology, handler):
    consumer = Consumer(amqp_url=infra.rabbitmq_url, topology=topology, handler=handler)
    async with background(consumer.run()):
        await asyncio.wait_for(consumer.ready.wait(), timeout=10)
        yield consumer


async def send(channel, topology, message_id, routing_key="order.created"):
    exchange = await declare_exchange(channel=channel, name=topology.exchange)
    await publish(
        exchange=exchange, routing_key=routing_key, body=orjson.dumps({"id": message_id}), message_id=message_id
    )


async def queue_depth(channel, name):
    declared = await channel.declare_queue(name, durable=True, passive=True)
    return declared.declaration_result.message_count or 0


async def test_declaring_twice_is_harmless(channel, topology):
    await declare_consumer(channel=channel, topology=topology)
    await declare_consumer(channel=channel, topology=topology)


async def test_handled_messages_are_acked(infra, channel, topology):
    recorder = Recorder()
    async with consuming(infra, topology, recorder):
        ids = [str(uuid.uuid4()) for _ in range(5)]
        for message_id in ids:
            await send(channel, topology, message_id)
        await recorder.until(lambda: len(recorder.deliveries) == 5, timeout=10)
    assert [d.message_id for _, d in recorder.deliveries] == ids
    assert all(d.attempt == 1 and d.routing_key == "order.created" for _, d in recorder.deliveries)
    assert await queue_depth(channel, topology.queue) == 0


async def test_a_passing_failure_is_retried_and_handled_once(infra, channel, topology):
    flaky = str(uuid.uuid4())
    recorder = Recorder(fail_times={flaky: 1})
    async with consuming(infra, topology, recorder):
        await send(channel, topology, flaky)
        await recorder.until(lambda: len(recorder.of(flaky)) == 2, timeout=10)
    second = recorder.of(flaky)[1][1]
    assert second.attempt == 2
    assert second.routing_key == "order.created"
    assert "cannot handle" in second.headers[ERROR_HEADER]
    assert await queue_depth(channel, topology.dead_letter_queue) == 0


async def test_a_poison_message_is_dead_lettered_after_growing_delays_and_blocks_nothing(infra, channel, topology):
    poison, healthy = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
    recorder = Recorder(fail_times={poison: 99})
    async with consuming(infra, topology, recorder):
        await send(channel, topology, poison)
        for message_id in healthy:
            await send(channel, topology, message_id)
        await recorder.until(lambda: len(recorder.of(poison)) == topology.max_attempts, timeout=20)
        # The healthy messages were handled while the poison one waited for its retries.
        assert {d.message_id for _, d in recorder.deliveries[:4]} >= set(healthy)

        async def dead_lettered():
            return await queue_depth(channel, topology.dead_letter_queue) == 1

        await eventually(dead_lettered, timeout=10, what="the message in the dead-letter queue")
    times = [at for at, _ in recorder.of(poison)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert [d.attempt for _, d in recorder.of(poison)] == [1, 2, 3, 4]
    for gap, delay in zip(gaps, topology.retry_delays, strict=True):
        assert gap >= delay * (1 - topology.jitter) - 0.05
    assert gaps == sorted(gaps)  # the waits grow
    queue = await channel.declare_queue(topology.dead_letter_queue, durable=True, passive=True)
    dead = await queue.get(timeout=5)
    assert dead.message_id == poison
    assert dead.headers[ATTEMPT_HEADER] == topology.max_attempts
    assert dead.headers[ORIGINAL_ROUTING_KEY_HEADER] == "order.created"
    assert "cannot handle" in dead.headers[ERROR_HEADER]
    timeline = [datetime.fromisoformat(str(at)) for at in dead.headers[FAILED_AT_HEADER]]
    assert len(timeline) == topology.max_attempts
    recorded_gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(timeline)]
    assert recorded_gaps == sorted(recorded_gaps)
    await dead.ack()


async def test_an_unroutable_message_raises(channel):
    with pytest.raises(PublishFailed):
        await publish(
            exchange=channel.default_exchange, routing_key=f"no-such-queue-{uuid.uuid4()}", body=b"{}", message_id="m"
        )


async def test_an_event_nobody_listens_for_is_kept_not_lost(channel, topology):
    exchange = await declare_exchange(channel=channel, name=topology.exchange)
    await publish(exchange=exchange, routing_key="nobody.listens", body=b"{}", message_id=str(uuid.uuid4()))
    assert await queue_depth(channel, f"{topology.exchange}.unrouted") == 1


async def test_a_broken_retry_path_dead_letters_instead_of_looping(infra, channel, topology):
    poison = str(uuid.uuid4())
    recorder = Recorder(fail_times={poison: 99})
    async with consuming(infra, topology, recorder):
        await channel.queue_delete(topology.retry_queue(1))  # deleted by hand while it runs
        await send(channel, topology, poison)
        await recorder.until(lambda: len(recorder.of(poison)) == 1, timeout=10)

        async def dead_lettered():
            return await queue_depth(channel, topology.dead_letter_queue) == 1

        await eventually(dead_lettered, timeout=10, what="the message in the dead-letter queue")
        assert await queue_depth(channel, topology.queue) == 0
    assert len(recorder.of(poison)) == 1


async def test_a_handler_that_hangs_times_out_and_the_queue_moves_on(infra, channel, topology):
    hung, healthy = str(uuid.uuid4()), str(uuid.uuid4())
    handled: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        handled.append((delivery.message_id, delivery.attempt))
        if delivery.message_id == hung and delivery.attempt == 1:
            await asyncio.Event().wait()  # never returns by itself
        if delivery.message_id == hung:
            done.set()

    consumer = Consumer(amqp_url=infra.rabbitmq_url, topology=topology, handler=handler, handler_timeout_seconds=0.3)
    async with background(consumer.run()):
        await asyncio.wait_for(consumer.ready.wait(), timeout=10)
        await send(channel, topology, hung)
        await send(channel, topology, healthy)
        await asyncio.wait_for(done.wait(), timeout=10)
    assert handled[:2] == [(hung, 1), (healthy, 1)]  # the hung call gave way
    assert (hung, 2) in handled  # and its message came back through the retry path


def gauge(name, queue):
    return REGISTRY.get_sample_value(name, {"queue": queue})


async def test_the_lag_of_a_handled_message_is_the_age_its_timestamp_gives(infra, channel, topology):
    recorder = Recorder()
    async with consuming(infra, topology, recorder):
        for name in ("messaging_consumer_lag_seconds", "messaging_queue_messages", "messaging_dead_letter_messages"):
            assert gauge(name, topology.queue) is not None, f"{name} is not on /metrics from the start"
        exchange = await declare_exchange(channel=channel, name=topology.exchange)
        sent_at = datetime.now(UTC) - timedelta(seconds=30)
        message = aio_pika.Message(body=b"{}", message_id=str(uuid.uuid4()), timestamp=sent_at)
        await exchange.publish(message, routing_key="order.created", mandatory=True)
        await recorder.until(lambda: len(recorder.deliveries) == 1, timeout=10)
    assert 29 <= gauge("messaging_consumer_lag_seconds", topology.queue) < 40  # timestamps are whole seconds


async def test_the_depths_of_the_queue_and_of_its_dead_letter_queue_are_watched(infra, channel, topology):
    release = asyncio.Event()

    async def held(delivery: Delivery) -> None:
        await release.wait()

    consumer = Consumer(
        amqp_url=infra.rabbitmq_url, topology=topology, handler=held, prefetch=1, depth_interval_seconds=0.05
    )

    def depths():
        return gauge("messaging_queue_messages", topology.queue), gauge(
            "messaging_dead_letter_messages", topology.queue
        )

    async def depths_are(expected):
        async def reached():
            return depths() == expected

        await eventually(reached, timeout=10, what=f"depths {expected}, last {depths()}")

    async with background(consumer.run()):
        await asyncio.wait_for(consumer.ready.wait(), timeout=10)
        for _ in range(4):  # one is delivered and held, three wait
            await send(channel, topology, str(uuid.uuid4()))
        for _ in range(2):
            await publish(
                exchange=channel.default_exchange,
                routing_key=topology.dead_letter_queue,
                body=b"{}",
                message_id=str(uuid.uuid4()),
            )
        await depths_are((3.0, 2.0))
        release.set()
        await depths_are((0.0, 2.0))
