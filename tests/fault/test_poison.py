"""A poison message: injected straight into the stack's exchange, as a bug upstream
would send it. It must go through the spaced retries into the dead letters without
blocking anything, and an admin replays it once its cause is gone."""

import asyncio
import itertools
import uuid
from datetime import UTC, datetime

import aio_pika
import orjson

from devstack.accounts import register
from devstack.testing import wait_for


async def publish(shop, *, routing_key, body):
    connection = await aio_pika.connect(shop.rabbitmq_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(shop.events_exchange, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                body=orjson.dumps(body),
                message_id=body["id"],
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
            mandatory=True,
        )
    finally:
        await connection.close()


def order_placed_for(user_id, order_id, event_id):
    """An order.placed event as event-store's relay publishes it."""
    now = datetime.now(UTC).isoformat()
    return {
        "id": str(event_id),
        "stream_id": f"order-{order_id}",
        "type": "order.placed",
        "data": {
            "order_id": str(order_id),
            "user_id": str(user_id),
            "items": [{"sku": "GHOST-1", "quantity": 1, "unit_price": "5.00"}],
            "total": "5.00",
            "currency": "EUR",
        },
        "metadata": {"occurred_at": now, "correlation_id": "poison-test", "causation_id": "poison-test"},
        "version": 1,
        "position": 1,
        "recorded_at": now,
    }


def dead_letter(shop, message_id):
    listed = shop.gateway.get("/api/admin/dead-letters", params={"limit": 100}, headers=shop.admin.headers)
    assert listed.status_code == 200, listed.text
    return next((d for d in listed.json()["items"] if d["message_id"] == message_id), None)


def test_a_poison_message_is_dead_lettered_after_growing_delays_and_replays_once_fixed(shop):
    """An order event for a user notification-service has not heard of fails until the
    user arrives; replayed after the user.created event, it has its effect once."""
    user_id, order_id, event_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    email = f"late-{user_id.hex[:12]}@example.com"
    asyncio.run(publish(shop, routing_key="order.placed", body=order_placed_for(user_id, order_id, event_id)))

    # Other messages keep flowing while the poison one waits for its retries.
    bystander = register(shop.gateway)
    placed = shop.place(bystander)
    assert placed.status_code == 201, placed.text
    shop.wait_for_mail(bystander.email, placed.json()["id"], timeout=10)

    dead = wait_for(lambda: dead_letter(shop, str(event_id)), timeout=30, what="the poison message dead-lettered")
    assert (dead["attempts"], dead["routing_key"]) == (4, "order.placed")
    assert str(user_id) in dead["error"]
    timeline = [datetime.fromisoformat(at) for at in dead["failed_at"]]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(timeline)]
    assert len(gaps) == 3
    assert gaps == sorted(gaps), gaps  # 0.5 s, 1 s, 2 s, each ±20%
    assert gaps[0] >= 0.4
    assert shop.mail.to(email) == []

    # The cause goes away: the user becomes known. Then one replay, and only one.
    user_created = {
        "id": str(uuid.uuid4()),
        "type": "user.created",
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": "poison-test",
        "data": {"id": str(user_id), "name": "Late User", "email": email, "roles": ["user"], "status": "ACTIVE"},
    }
    asyncio.run(publish(shop, routing_key="user.created", body=user_created))
    path = f"/api/admin/dead-letters/{dead['id']}/replay"
    replayed = shop.gateway.post(path, headers=shop.admin.headers)
    assert replayed.status_code == 200, replayed.text
    assert len(shop.wait_for_mail(email, str(order_id))) == 1
    assert shop.gateway.post(path, headers=shop.admin.headers).status_code == 404
    assert dead_letter(shop, str(event_id)) is None
    # A later event for the same user is the barrier: the replay had one effect only.
    later_id = uuid.uuid4()
    asyncio.run(publish(shop, routing_key="order.placed", body=order_placed_for(user_id, later_id, uuid.uuid4())))
    shop.wait_for_mail(email, str(later_id))
    assert len(shop.mails_about(email, str(order_id))) == 1


def test_an_admin_discards_a_dead_letter(shop):
    event_id = uuid.uuid4()
    asyncio.run(publish(shop, routing_key="order.placed", body=order_placed_for(uuid.uuid4(), uuid.uuid4(), event_id)))
    dead = wait_for(lambda: dead_letter(shop, str(event_id)), timeout=30, what="the message dead-lettered")
    path = f"/api/admin/dead-letters/{dead['id']}"
    assert shop.gateway.delete(path, headers=shop.admin.headers).status_code == 204
    assert dead_letter(shop, str(event_id)) is None
    assert shop.gateway.delete(path, headers=shop.admin.headers).status_code == 404
