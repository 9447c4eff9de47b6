"""The relay publishes every recorded event to RabbitMQ, and survives being killed."""

import asyncio
import contextlib
import uuid

import aio_pika
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from devstack.testing import PrivateRabbitMQ, delete_exchange, eventually, free_port, run_id, throwaway_database
from event_store.adapters.relay import OUTBOX, RabbitMQRelay
from event_store.bootstrap import MIGRATIONS, build
from event_store.domain.model import ExpectedVersion, NewEvent
from interchange_common.messaging import declare_exchange
from interchange_common.migrations import upgrade
from interchange_common.tasks import background

pytestmark = pytest.mark.integration


class Collector:
    """Consumes everything published to an exchange, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        self.ready = asyncio.Event()
        self._arrived = asyncio.Event()

    async def run(self, *, amqp_url: str, exchange: str) -> None:
        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=500)
            events = await declare_exchange(channel=channel, name=exchange)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(events, routing_key="#")
            self.ready.set()
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    self.messages.append(message)
                    self._arrived.set()
        finally:
            await connection.close()

    async def until(self, condition, *, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    def unique_ids(self) -> set[str]:
        return {str(message.message_id) for message in self.messages}


@contextlib.asynccontextmanager
async def collecting(*, amqp_url: str, exchange: str):
    collector = Collector()
    task = asyncio.create_task(collector.run(amqp_url=amqp_url, exchange=exchange))
    await asyncio.wait_for(collector.ready.wait(), timeout=10)
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_each_event_is_published_persistently_with_its_id_and_type(service, service_token, infra, exchange):
    s = f"order-{uuid.uuid4()}"
    events = [
        {"id": str(uuid.uuid4()), "type": "order.created", "data": {"n": 1}, "metadata": {"correlation_id": "c-9"}},
        {"id": str(uuid.uuid4()), "type": "order.cancelled", "data": {"n": 2}, "metadata": {}},
    ]
    async with collecting(amqp_url=infra.rabbitmq_url, exchange=exchange) as collector:
        async with httpx.AsyncClient(
            base_url=service.url, headers={"authorization": f"Bearer {service_token}"}
        ) as http:
            response = await http.post(f"/streams/{s}/events", json={"expected_version": "any", "events": events})
            assert response.status_code == 201
        await collector.until(lambda: {e["id"] for e in events} <= collector.unique_ids(), timeout=15)
    by_id = {str(message.message_id): message for message in collector.messages}
    created = by_id[str(events[0]["id"])]
    assert created.routing_key == "order.created"
    assert created.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert created.content_type == "application/json"
    assert created.correlation_id == "c-9"
    assert created.headers["stream_id"] == s
    body = orjson.loads(created.body)
    assert (body["version"], body["data"]) == (1, {"n": 1})
    assert body["position"] >= 1
    assert by_id[str(events[1]["id"])].routing_key == "order.cancelled"


async def test_events_nobody_listens_for_are_kept_not_returned(service, service_token, infra, exchange):
    """No queue is bound for this type: the alternate exchange keeps it, the relay goes on."""
    connection = await aio_pika.connect(infra.rabbitmq_url)
    channel = await connection.channel()
    unrouted = await channel.declare_queue(f"{exchange}.unrouted", passive=True)
    before = unrouted.declaration_result.message_count or 0
    type_ = f"nobody.listens{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=service.url, headers={"authorization": f"Bearer {service_token}"}) as http:
        event = {"id": str(uuid.uuid4()), "type": type_, "data": {}}
        await http.post(f"/streams/s-{uuid.uuid4()}/events", json={"expected_version": "any", "events": [event]})

    async def kept() -> bool:
        declared = await channel.declare_queue(f"{exchange}.unrouted", passive=True)
        return (declared.declaration_result.message_count or 0) > before

    async with asyncio.timeout(15):
        while not await kept():
            await asyncio.sleep(0.05)
    await connection.close()


async def test_killing_the_service_mid_publish_loses_nothing_and_keeps_stream_order(infra, start_service, settings_on):
    streams, per_stream, batch = 30, 100, 10
    total = streams * per_stream
    exchange = f"ic-it-crash-{run_id()}.events"
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_crash") as database_url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=database_url)
        async with collecting(amqp_url=infra.rabbitmq_url, exchange=exchange) as collector:
            first = start_service(on_database=database_url, on_exchange=exchange)
            # Record everything up front, from a second writer (as another instance would).
            writer = await build(settings=settings_on(database_url=database_url, pool_size=5))
            names = [f"crash-{i}-{uuid.uuid4().hex[:6]}" for i in range(streams)]
            for offset in range(0, per_stream, batch):
                for name in names:
                    await writer.storage.append(
                        stream_id=name,
                        expected=ExpectedVersion.parse(offset),
                        events=[NewEvent(uuid.uuid4(), "crash.test", {"i": offset + i}, {}) for i in range(batch)],
                    )
            await writer.close()

            await collector.until(lambda: len(collector.messages) >= total // 10, timeout=60)
            first.kill()
            delivered_before_the_kill = len(collector.unique_ids())
            assert delivered_before_the_kill < total, "the relay finished before the kill: nothing was tested"

            start_service(on_database=database_url, on_exchange=exchange)
            await collector.until(lambda: len(collector.unique_ids()) == total, timeout=90)

        arrivals: dict[str, list[int]] = {}
        seen: set[str] = set()
        for message in collector.messages:
            if message.message_id in seen:
                continue  # a duplicate after the restart: allowed, and recognisable by its id
            seen.add(str(message.message_id))
            arrivals.setdefault(str(message.headers["stream_id"]), []).append(int(message.headers["version"]))
        assert set(arrivals) == set(names)
        for versions in arrivals.values():
            assert versions == list(range(1, per_stream + 1))
    await delete_exchange(amqp_url=infra.rabbitmq_url, exchange=exchange)


@pytest.fixture
def private_broker():
    reason = PrivateRabbitMQ.unavailable_because()
    if reason:
        pytest.skip(reason)
    broker = PrivateRabbitMQ(name=f"ic-{run_id()}")
    broker.start()
    yield broker
    broker.remove()


async def test_a_broker_restart_loses_nothing(infra, start_service, private_broker, settings_on):
    exchange, queue_name = "interchange.events", "test.everything"

    async def bind_durable_queue() -> None:
        connection = await aio_pika.connect(private_broker.url)
        channel = await connection.channel()
        events = await declare_exchange(channel=channel, name=exchange)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(events, routing_key="#")
        await connection.close()

    async def drain() -> list[str]:
        connection = await aio_pika.connect(private_broker.url)
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        ids = []
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            ids.append(str(message.message_id))
        await connection.close()
        return ids

    async def record(storage, stream, n, start):
        events = [NewEvent(uuid.uuid4(), "restart.test", {"i": i}, {}) for i in range(n)]
        await storage.append(stream_id=stream, expected=ExpectedVersion.parse(start), events=events)
        return {str(event.id) for event in events}

    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_broker") as database_url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=database_url)
        await bind_durable_queue()
        service = start_service(on_database=database_url, on_exchange=exchange, on_broker=private_broker.url)
        writer = await build(settings=settings_on(database_url=database_url, pool_size=2))
        stream = f"restart-{uuid.uuid4().hex[:8]}"
        recorded = await record(writer.storage, stream, 100, 0)
        received: list[str] = []
        async with asyncio.timeout(30):
            while not recorded <= set(received):
                received += await drain()
                await asyncio.sleep(0.05)

        private_broker.stop()
        recorded |= await record(writer.storage, stream, 150, 100)  # the outbox keeps them
        private_broker.start()
        async with asyncio.timeout(60):
            while not recorded <= set(received):
                received += await drain()
                await asyncio.sleep(0.1)
        await writer.close()
        service.stack.stop()
    assert set(received) == recorded


def backlog():
    labels = {"outbox": OUTBOX}
    return (
        REGISTRY.get_sample_value("outbox_backlog_messages", labels),
        REGISTRY.get_sample_value("outbox_lag_seconds", labels),
    )


async def test_the_backlog_past_the_checkpoint_shows_while_the_broker_is_down_and_is_gone_once_published(
    infra, settings_on
):
    exchange = f"ic-it-backlog-{run_id()}.events"
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_backlog") as database_url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=database_url)
        container = await build(settings=settings_on(database_url=database_url, pool_size=2))
        storage = container.storage
        async with background(container.sequencer.run(), container.listener.run()):
            for n in (3, 4):  # two commits, seven events
                events = [NewEvent(uuid.uuid4(), "backlog.test", {}, {}) for _ in range(n)]
                await storage.append(
                    stream_id=f"b-{uuid.uuid4()}", expected=ExpectedVersion.parse("any"), events=events
                )

            async def sequenced() -> bool:
                return len((await storage.read_all(start=1, limit=100)).events) == 7

            await eventually(sequenced, timeout=10, what="the events to get positions")
            for batch in (100, 2):  # the page holds them all; or the rest is reckoned from the last position
                relay = RabbitMQRelay(
                    dsn=container.settings.asyncpg_dsn,
                    amqp_url=nowhere,
                    exchange=exchange,
                    storage=storage,
                    batch=batch,
                )
                async with background(relay.run()):

                    async def measured() -> bool:
                        messages, lag = backlog()
                        return messages == 7 and lag is not None and lag > 0

                    await eventually(measured, timeout=10, what=f"a backlog of 7, last {backlog()}")
            relay = RabbitMQRelay(
                dsn=container.settings.asyncpg_dsn,
                amqp_url=infra.rabbitmq_url,
                exchange=exchange,
                storage=storage,
                batch=2,
            )
            async with background(relay.run()):

                async def published() -> bool:
                    return backlog() == (0.0, 0.0)

                await eventually(published, timeout=15, what=f"an empty backlog, last {backlog()}")
        await container.close()
    await delete_exchange(amqp_url=infra.rabbitmq_url, exchange=exchange)
