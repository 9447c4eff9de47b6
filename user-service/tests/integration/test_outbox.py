"""user events through the transactional outbox to RabbitMQ, with a real relay."""

import asyncio
import contextlib
import uuid

import aio_pika
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from devstack.testing import eventually, free_port
from interchange_common.actors import Actor
from interchange_common.messaging import declare_exchange
from interchange_common.outbox import OutboxRelay, outbox
from interchange_common.tasks import background
from user_service.bootstrap import OUTBOX_RELAY_LOCK
from user_service.config import SERVICE_NAME
from user_service.domain.errors import EmailTaken
from user_service.domain.model import NewUser, UserChanges

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def listening(infra, exchange):
    """A queue bound to user.# on the exchange; yields the list it fills."""
    connection = await aio_pika.connect(infra.rabbitmq_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(await declare_exchange(channel=channel, name=exchange), routing_key="user.#")
    received: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def consume():
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                received.append(message)

    async with background(consume()):
        yield received
    await connection.close()


@contextlib.asynccontextmanager
async def relaying(database_url, infra):
    relay = OutboxRelay(name=SERVICE_NAME, dsn=database_url, amqp_url=infra.rabbitmq_url, lock_id=OUTBOX_RELAY_LOCK)
    async with background(relay.run()):
        yield


async def until(condition, *, timeout=15):
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def bodies(received, *, user_id):
    return [orjson.loads(m.body) for m in received if orjson.loads(m.body)["data"]["id"] == str(user_id)]


async def outbox_rows(engine):
    async with engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(outbox))


async def test_every_change_reaches_the_exchange_in_order_without_secrets(users, database_url, infra, events_exchange):
    async with listening(infra, events_exchange) as received, relaying(database_url, infra):
        user = await users.register(
            new_user=NewUser(name="Ada", email=f"o-{uuid.uuid4().hex[:8]}@example.com", password="long enough")
        )
        await users.update(actor=Actor.trusted_service(), user_id=user.id, changes=UserChanges(name="Ada L."))
        await users.delete(actor=Actor.trusted_service(), user_id=user.id)
        await until(lambda: len(bodies(received, user_id=user.id)) == 3)
    mine = bodies(received, user_id=user.id)
    assert [body["type"] for body in mine] == ["user.created", "user.updated", "user.deleted"]
    assert mine[0]["data"]["email"] == user.email
    assert mine[1]["data"]["name"] == "Ada L."
    assert mine[1]["data"]["changed"] == ["name"]
    assert all("password" not in orjson.dumps(body).decode() for body in mine)
    first = next(m for m in received if orjson.loads(m.body)["id"] == mine[0]["id"])
    assert first.routing_key == "user.created"
    assert first.message_id == mine[0]["id"]
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_a_change_that_fails_leaves_no_message(users, engine):
    email = f"o-{uuid.uuid4().hex[:8]}@example.com"
    await users.register(new_user=NewUser(name="Ada", email=email, password="long enough"))
    before = await outbox_rows(engine)
    with pytest.raises(EmailTaken):
        await users.register(new_user=NewUser(name="Copy", email=email, password="long enough"))
    assert await outbox_rows(engine) == before


async def test_events_wait_for_a_relay_and_survive_its_restart_in_order(users, database_url, infra, events_exchange):
    user = await users.register(
        new_user=NewUser(name="v0", email=f"o-{uuid.uuid4().hex[:8]}@example.com", password="long enough")
    )
    for version in range(1, 60):  # recorded while no relay runs: they wait in the outbox
        await users.update(actor=Actor.trusted_service(), user_id=user.id, changes=UserChanges(name=f"v{version}"))
    async with listening(infra, events_exchange) as received:
        async with relaying(database_url, infra):
            await until(lambda: len(bodies(received, user_id=user.id)) >= 10)
        # Stopped after at least ten (maybe all, if it was quick); another relay goes on
        # from whatever the first did not delete.
        async with relaying(database_url, infra):
            expected = {f"v{i}" for i in range(60)}
            await until(lambda: {b["data"].get("name") for b in bodies(received, user_id=user.id)} >= expected)
    names: list[str] = []
    for body in bodies(received, user_id=user.id):  # first arrival of each event, in arrival order
        if body["data"]["name"] not in names:
            names.append(body["data"]["name"])
    assert names == [f"v{i}" for i in range(60)]


def backlog() -> tuple[float | None, float | None]:
    labels = {"outbox": SERVICE_NAME}
    return (
        REGISTRY.get_sample_value("outbox_backlog_messages", labels),
        REGISTRY.get_sample_value("outbox_lag_seconds", labels),
    )


async def test_the_backlog_shows_while_the_broker_is_down_and_is_gone_once_published(
    users, database_url, infra, engine
):
    user = await users.register(
        new_user=NewUser(name="v0", email=f"o-{uuid.uuid4().hex[:8]}@example.com", password="long enough")
    )
    for version in range(1, 5):
        await users.update(actor=Actor.trusted_service(), user_id=user.id, changes=UserChanges(name=f"v{version}"))
    waiting = await outbox_rows(engine)  # these five, and whatever other tests left for a relay
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/"

    async def measured(*, batch: int, expected) -> None:
        relay = OutboxRelay(
            name=SERVICE_NAME, dsn=database_url, amqp_url=nowhere, lock_id=OUTBOX_RELAY_LOCK, batch=batch
        )
        async with background(relay.run()):

            async def reached() -> bool:
                messages, lag = backlog()
                return messages is not None and expected(messages) and lag is not None and lag > 0

            await eventually(reached, timeout=10, what=f"a backlog of {waiting}, last {backlog()}")

    await measured(batch=10_000, expected=lambda messages: messages == waiting)  # counted: all in one batch
    await measured(batch=2, expected=lambda messages: messages >= waiting)  # reckoned from the seqs
    async with relaying(database_url, infra):

        async def published() -> bool:
            return backlog() == (0.0, 0.0)

        await eventually(published, timeout=15, what=f"an empty backlog, last {backlog()}")
    assert await outbox_rows(engine) == 0
