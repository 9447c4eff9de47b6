"""The hop from a retry queue back to the consumer's queue is the broker's own
dead-lettering. Killed (SIGKILL) between the two queues, a private RabbitMQ node must
still deliver every message once it is back: messages on their way when it dies, and
messages that came due while their queue refused them. From a classic retry queue
(at-most-once dead-lettering) both are lost; the quorum retry queues keep them until
the consumer's queue has confirmed them, and send them again after the restart."""

import contextlib
import os
import signal
import subprocess
import uuid

import aio_pika
import pytest

from devstack.testing import PrivateRabbitMQ, eventually, run_id
from interchange_common.messaging import ATTEMPT_HEADER, Consumer, ConsumerTopology, declare_consumer, publish
from interchange_common.tasks import background

ON_THEIR_WAY = 50
REFUSED = 20


@pytest.fixture(scope="module")
def broker():
    reason = PrivateRabbitMQ.unavailable_because()
    if reason:
        pytest.skip(f"needs a private RabbitMQ node: {reason}")
    node = PrivateRabbitMQ(name=f"ic-fault-dlx-{run_id()}")
    node.start()
    try:
        yield node
    finally:
        node.remove()


def rabbitmqctl(node: PrivateRabbitMQ, *args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-n", node.node, *args], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout


def erlang_vm(node: PrivateRabbitMQ) -> int:
    """The operating system's id of the node's Erlang VM, the process to SIGKILL."""
    return int(rabbitmqctl(node, "eval", "os:getpid().").strip().strip('"'))


def queue_process(queue: str) -> str:
    """An Erlang expression for the process of a classic queue in the default vhost."""
    name = f'rabbit_misc:r(<<"/">>, queue, <<"{queue}">>)'
    return f"amqqueue:get_pid(element(2, rabbit_amqqueue:lookup({name})))"


def restart_after_kill(node: PrivateRabbitMQ) -> None:
    node.stop()  # finds the node gone; reaps its launcher
    node.start()


@contextlib.asynccontextmanager
async def channel_to(node: PrivateRabbitMQ):
    connection = await aio_pika.connect(node.url)
    try:
        yield await connection.channel(publisher_confirms=True, on_return_raises=True)
    finally:
        await connection.close()


async def depth(channel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def retry(channel, topology: ConsumerTopology, message_id: str, *, delay: float) -> None:
    """A first attempt that failed, as the consumer sends it to wait out its delay."""
    await publish(
        exchange=channel.default_exchange,
        routing_key=topology.retry_queue(1),
        body=b"{}",
        message_id=message_id,
        headers={ATTEMPT_HEADER: 1, "x-original-routing-key": "order.placed"},
        expiration_seconds=delay,
    )


async def test_retries_on_their_way_back_when_the_broker_dies_arrive_after_its_restart(broker):
    name = f"ic-fault-way-back-{run_id()}"
    topology = ConsumerTopology(exchange=f"{name}.events", queue=name, bindings=("order.*",), retry_delays=(0.5,))
    expected = {str(uuid.uuid4()) for _ in range(ON_THEIR_WAY)}
    async with channel_to(broker) as channel:
        await declare_consumer(channel=channel, topology=topology)
        # The queue's process stops taking its mail: whatever is dead-lettered to it now
        # stays on its way (in that mailbox, unconfirmed) until the broker dies.
        rabbitmqctl(broker, "eval", f"sys:suspend({queue_process(name)}).")
        for message_id in expected:
            await retry(channel, topology, message_id, delay=0.5)

        async def all_due() -> bool:
            return await depth(channel, topology.retry_queue(1)) == 0

        await eventually(all_due, timeout=30, what="the retries to come due")
    os.kill(erlang_vm(broker), signal.SIGKILL)
    restart_after_kill(broker)
    seen: set[str] = set()
    async with channel_to(broker) as channel:
        queue = await channel.get_queue(topology.queue, ensure=False)

        async def all_back() -> bool:
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                seen.add(str(message.message_id))
            return seen >= expected

        with contextlib.suppress(TimeoutError):
            await eventually(all_back, timeout=60, interval=0.2, what="every retry back in the queue")
    assert len(expected - seen) == 0, f"{len(expected - seen)} of {ON_THEIR_WAY} retries lost"


async def test_retries_that_came_due_while_the_queue_refused_them_survive_a_kill(broker):
    name = f"ic-fault-refused-{run_id()}"
    topology = ConsumerTopology(exchange=f"{name}.events", queue=name, bindings=("order.*",), retry_delays=(0.5,))
    expected = {str(uuid.uuid4()) for _ in range(REFUSED)}
    async with channel_to(broker) as channel:
        await declare_consumer(channel=channel, topology=topology)
        # The queue takes nothing (full, say: a length limit that rejects new messages).
        refusal = '{"max-length": 0, "overflow": "reject-publish"}'
        rabbitmqctl(broker, "set_policy", "--apply-to", "queues", "refuse", f"^{name}$", refusal)
        for message_id in expected:
            await retry(channel, topology, message_id, delay=0.5)

        async def all_due() -> bool:
            return await depth(channel, topology.retry_queue(1)) == 0

        await eventually(all_due, timeout=30, what="the retries to come due")
        assert await depth(channel, topology.queue) == 0  # refused: between the two queues
    rabbitmqctl(broker, "clear_policy", "refuse")  # it could take them now: only the broker's retry is missing
    os.kill(erlang_vm(broker), signal.SIGKILL)
    restart_after_kill(broker)
    handled: dict[str, int] = {}

    async def handler(delivery) -> None:
        handled[delivery.message_id] = delivery.attempt

    consumer = Consumer(amqp_url=broker.url, topology=topology, handler=handler)
    async with background(consumer.run()):

        async def all_handled() -> bool:
            return handled.keys() >= expected

        with contextlib.suppress(TimeoutError):
            await eventually(all_handled, timeout=60, interval=0.2, what="every retry handled")
    assert len(expected - handled.keys()) == 0, f"{len(expected - handled.keys())} of {REFUSED} retries lost"
    assert set(handled.values()) == {2}  # their second attempt, as the consumer counts
