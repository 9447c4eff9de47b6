"""Events in, notifications and mail out, against the real broker, database and an SMTP server."""

import asyncio
import itertools
import uuid
from datetime import datetime

import pytest

from interchange_common.actors import Actor
from interchange_common.messaging import DEAD_AT_HEADER, ORIGINAL_ROUTING_KEY_HEADER, publish

pytestmark = pytest.mark.integration

ADMIN = {"x-actor-id": str(uuid.uuid4()), "x-actor-roles": "user,admin"}


def as_user(user_id):
    return {"x-actor-id": str(user_id), "x-actor-roles": "user"}


async def handled(db, message_id):
    return await db.fetchval("SELECT count(*) FROM processed_messages WHERE message_id = $1", message_id)


async def count(db, table, event_id):
    return await db.fetchval(f"SELECT count(*) FROM {table} WHERE event_id = $1", uuid.UUID(event_id))  # noqa: S608


async def sent(db, message):
    query = "SELECT sent_at IS NOT NULL FROM mail_outbox WHERE event_id = $1"
    return await db.fetchval(query, uuid.UUID(message.message_id))


@pytest.fixture
def until_handled(eventually):
    async def wait(db, message):
        await eventually(lambda: handled(db, message.message_id), what=f"{message.routing_key} to be handled")

    return wait


@pytest.fixture
def known_user(bus, db, events, until_handled):
    async def make(*, email=None):
        user_id = uuid.uuid4()
        created = events.user(user_id=user_id, email=email or f"n-{uuid.uuid4().hex[:8]}@example.com")
        await bus.send(created)
        await until_handled(db, created)
        return user_id

    return make


async def test_an_order_for_a_known_user_makes_one_notification_and_one_mail(
    service, bus, db, smtp, events, known_user, eventually
):
    user_id = await known_user(email="ada@example.com")
    order_id = uuid.uuid4()
    placed = events.order(order_id=order_id, user_id=user_id)
    await bus.send(placed)

    [mail] = await smtp.wait_for(placed.message_id)
    assert mail["Message-ID"] == f"<{placed.message_id}@interchange.local>"
    assert mail["To"].addresses[0].addr_spec == "ada@example.com"
    assert mail["From"].addresses[0].addr_spec == "no-reply@interchange.local"
    assert str(order_id) in mail["Subject"]
    text = mail.get_content()
    for expected in (str(order_id), "2 x BOOK-1 at 5.00 EUR", "1 x PEN-7 at 2.50 EUR", "Total: 12.50 EUR"):
        assert expected in text
    await eventually(lambda: sent(db, placed), what="the mail to be marked sent")

    response = await service.client.get("/internal/notifications", headers=as_user(user_id))
    assert response.status_code == 200, response.text
    listed = response.json()
    assert (listed["total"], listed["page"], listed["limit"]) == (2, 1, 10)
    newest, welcome = listed["items"]
    assert (newest["type"], newest["title"]) == ("order.placed", "Order confirmed")
    assert newest["data"] == {"order_id": str(order_id), "total": "12.50", "currency": "EUR", "items": 2}
    assert welcome["type"] == "user.created"
    other = await service.client.get("/internal/notifications", headers=as_user(uuid.uuid4()))
    assert other.json()["total"] == 0


async def duplicates(service):
    """How many redeliveries the service has recognised (its Prometheus counter)."""
    metrics = (await service.client.get("/metrics")).text
    prefix = 'notification_messages_total{outcome="duplicate"}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


async def test_the_same_message_delivered_twice_has_one_effect(
    service, bus, db, smtp, events, known_user, until_handled
):
    user_id = await known_user()
    placed = events.order(order_id=uuid.uuid4(), user_id=user_id)
    duplicates_before = await duplicates(service)
    await bus.send(placed)
    await bus.send(placed)
    # One consumer handles its queue in order: once a later message is handled, both copies were.
    marker = events.order("order.noted", order_id=uuid.uuid4())
    await bus.send(marker)
    await until_handled(db, marker)
    assert await duplicates(service) == duplicates_before + 1  # the second copy was recognised
    assert await smtp.wait_for(placed.message_id)
    assert await count(db, "notifications", placed.message_id) == 1
    assert await count(db, "mail_outbox", placed.message_id) == 1
    assert len(smtp.with_event(placed.message_id)) == 1


async def test_status_changes_reach_the_user_of_the_order(service, bus, db, smtp, events, known_user, until_handled):
    user_id = await known_user()
    order_id = uuid.uuid4()
    placed = events.order(order_id=order_id, user_id=user_id)
    shipped = events.order("order.shipped", order_id=order_id)
    cancelled = events.order("order.cancelled", order_id=order_id, reason="out of stock")
    for message in (placed, shipped, cancelled):
        await bus.send(message)
    [mail] = await smtp.wait_for(cancelled.message_id)
    assert "Reason: out of stock" in mail.get_content()
    await until_handled(db, shipped)
    listed = (await service.client.get("/internal/notifications", headers=as_user(user_id))).json()
    assert [item["type"] for item in listed["items"]] == [
        "order.cancelled",
        "order.shipped",
        "order.placed",
        "user.created",
    ]
    assert smtp.with_event(shipped.message_id) == []


async def dead_letters(service):
    response = await service.client.get("/internal/admin/dead-letters", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_poison_message_is_retried_dead_lettered_and_replayed_once_the_cause_is_fixed(
    service, bus, db, smtp, events, known_user, until_handled, eventually
):
    stranger = uuid.uuid4()
    poison = events.order(order_id=uuid.uuid4(), user_id=stranger)
    await bus.send(poison)

    # Meanwhile, other messages flow: this one is done long before the poison runs out of retries.
    flowing = events.order(order_id=uuid.uuid4(), user_id=await known_user())
    await bus.send(flowing)
    await smtp.wait_for(flowing.message_id)
    assert (await dead_letters(service))["total"] == 0

    async def dead_poison():
        return [item for item in (await dead_letters(service))["items"] if item["message_id"] == poison.message_id]

    [dead] = await eventually(dead_poison, what="the poison message to be dead-lettered")
    assert dead["routing_key"] == "order.placed"
    assert dead["attempts"] == len(service.container.settings.retry_delays) + 1
    assert "RecipientUnknown" in dead["error"]
    assert str(stranger) in dead["error"]
    assert dead["body"] == poison.body
    timeline = [datetime.fromisoformat(at) for at in dead["failed_at"]]
    assert len(timeline) == len(service.container.settings.retry_delays) + 1
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(timeline)]
    assert gaps == sorted(gaps)
    assert gaps[0] >= service.container.settings.retry_delays[0] * 0.8  # jitter is ±20%
    assert await handled(db, poison.message_id) == 0
    assert smtp.with_event(poison.message_id) == []

    # The cause is fixed: the user arrives. Two admins press "replay" at the same moment.
    created = events.user(user_id=stranger)
    await bus.send(created)
    await until_handled(db, created)
    [stored] = (await service.container.dead_letters.list(actor=Actor.trusted_service(), page=1, limit=10))[0]
    replays = await asyncio.gather(
        *(service.client.post(f"/internal/admin/dead-letters/{dead['id']}/replay", headers=ADMIN) for _ in range(2))
    )
    assert sorted(response.status_code for response in replays) == [200, 404]
    [ok] = [response for response in replays if response.status_code == 200]
    assert ok.json() == {"id": dead["id"], "message_id": poison.message_id, "replayed": True}

    [mail] = await smtp.wait_for(poison.message_id)
    assert mail["Message-ID"] == f"<{poison.message_id}@interchange.local>"
    assert (await dead_letters(service))["total"] == 0

    # A crash between publish and delete would send it once more: still one effect.
    await service.container.republisher.republish(dead_letter=stored)
    marker = events.order("order.noted", order_id=uuid.uuid4())
    await bus.send(marker)
    await until_handled(db, marker)
    assert await count(db, "notifications", poison.message_id) == 1
    assert await count(db, "mail_outbox", poison.message_id) == 1
    assert (await dead_letters(service))["total"] == 0


async def test_a_dead_message_delivered_twice_is_stored_once(service, bus, db, names, eventually):
    queue = f"{names['EVENTS_QUEUE']}.dead"
    message_id = str(uuid.uuid4())
    headers = {ORIGINAL_ROUTING_KEY_HEADER: "order.placed", DEAD_AT_HEADER: "2026-11-28T12:00:00+00:00"}
    for _ in range(2):
        await publish(
            exchange=bus.channel.default_exchange, routing_key=queue, body=b"{}", message_id=message_id, headers=headers
        )
    marker = str(uuid.uuid4())
    await publish(exchange=bus.channel.default_exchange, routing_key=queue, body=b"not json", message_id=marker)
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM dead_letters WHERE message_id = $1", marker), what="the marker"
    )
    assert await db.fetchval("SELECT count(*) FROM dead_letters WHERE message_id = $1", message_id) == 1
    listed = await dead_letters(service)
    assert {item["body"] for item in listed["items"] if item["message_id"] == marker} == {"not json"}
    assert await bus.queue_depth(queue) == 0


async def test_mail_waits_while_the_smtp_server_is_down_and_goes_once_it_is_back(
    service, bus, db, smtp, events, known_user, eventually
):
    await smtp.stop()
    user_id = await known_user()
    placed = events.order(order_id=uuid.uuid4(), user_id=user_id)
    await bus.send(placed)

    async def failed_attempts():
        row = await db.fetchrow(
            "SELECT attempts, sent_at FROM mail_outbox WHERE event_id = $1", uuid.UUID(placed.message_id)
        )
        return row is not None and row["attempts"] >= 2 and row["sent_at"] is None

    await eventually(failed_attempts, what="the dispatcher to have tried and failed twice")
    assert await count(db, "notifications", placed.message_id) == 1  # the notification did not wait for mail

    await smtp.start()
    [mail] = await smtp.wait_for(placed.message_id, timeout=20)
    assert mail["X-Interchange-Event-Id"] == placed.message_id
    await eventually(lambda: sent(db, placed), what="the mail to be marked sent")
    assert len(smtp.with_event(placed.message_id)) == 1


async def test_unknown_types_are_recorded_and_acked(service, bus, db, events, names, until_handled):
    unknown = events.order("order.refunded", order_id=uuid.uuid4())
    await bus.send(unknown)
    await until_handled(db, unknown)
    assert await db.fetchval("SELECT count(*) FROM notifications") == 0
    assert await bus.queue_depth(names["EVENTS_QUEUE"]) == 0


async def test_health_reports_the_database_the_consumers_and_redis(service):
    response = await service.client.get("/health")
    assert response.status_code == 200, response.text
    assert {check["service"]: check["status"] for check in response.json()["services"]} == {
        "postgres": "healthy",
        "rabbitmq": "healthy",
        "redis": "healthy",
    }
    assert "notification_messages_total" in (await service.client.get("/metrics")).text


async def test_health_is_503_while_the_live_channels_are_not_subscribed(service):
    service.container.live.ready.clear()
    response = await service.client.get("/health")
    assert response.status_code == 503
    assert {check["service"]: check["status"] for check in response.json()["services"]}["redis"] != "healthy"


async def test_health_is_503_while_a_consumer_is_disconnected(service):
    service.container.dead_letter_consumer.ready.clear()
    response = await service.client.get("/health")
    assert response.status_code == 503
