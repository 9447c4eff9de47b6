"""SIGKILL after the effect committed and before the ack: the broker delivers the event
again to the restarted service, which recognises it. One notification, one mail."""

import asyncio
import json
import signal
import uuid

import pytest

from devstack.testing import free_port

pytestmark = pytest.mark.integration


def log_lines(stack):
    path = stack.log_dir / "notification-service.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


async def test_a_redelivery_after_a_crash_between_commit_and_ack_has_no_second_effect(
    start_process, bus, db, smtp, events, names, eventually
):
    # The crashing run's mail server is a closed port: its dispatcher cannot send the
    # mail in the instant between the commit and the SIGKILL, whatever the load.
    crashing = await asyncio.to_thread(
        start_process, CRASH_AFTER_COMMIT_BEFORE_ACK="true", SMTP_URL=f"smtp://127.0.0.1:{free_port()}"
    )
    process = crashing.running[0].process
    user_id = uuid.uuid4()
    created = events.user(user_id=user_id, email="crash@example.com")
    await bus.send(created)
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM processed_messages WHERE message_id = $1", created.message_id),
        what="user.created to be handled",
    )
    assert process.poll() is None  # no mail queued, no crash

    placed = events.order(order_id=uuid.uuid4(), user_id=user_id)
    await bus.send(placed)
    assert await asyncio.to_thread(process.wait, 30) == -signal.SIGKILL
    await asyncio.to_thread(crashing.stop)
    event_id = uuid.UUID(placed.message_id)
    # The effect committed; the ack never left; the mail could not go.
    assert await db.fetchval("SELECT count(*) FROM notifications WHERE event_id = $1", event_id) == 1
    assert await db.fetchval("SELECT sent_at FROM mail_outbox WHERE event_id = $1", event_id) is None
    assert smtp.with_event(placed.message_id) == []
    assert any(line.get("message", "").startswith("fault injection") for line in log_lines(crashing))

    restarted = await asyncio.to_thread(start_process)
    [mail] = await smtp.wait_for(placed.message_id, timeout=30)
    assert mail["Message-ID"] == f"<{placed.message_id}@interchange.local>"

    async def redelivered():
        return [
            line
            for line in log_lines(restarted)
            if line.get("message_id") == placed.message_id and line.get("outcome") == "duplicate"
        ]

    await eventually(redelivered, timeout=30, what="the redelivered event to be recognised")
    await eventually(
        lambda: db.fetchval("SELECT sent_at IS NOT NULL FROM mail_outbox WHERE event_id = $1", event_id),
        what="the mail to be marked sent",
    )
    await asyncio.to_thread(restarted.stop)
    assert await bus.queue_depth(names["EVENTS_QUEUE"]) == 0  # acked this time: nothing came back on stop
    assert await db.fetchval("SELECT count(*) FROM notifications WHERE event_id = $1", event_id) == 1
    assert await db.fetchval("SELECT count(*) FROM mail_outbox WHERE event_id = $1", event_id) == 1
    assert len(smtp.with_event(placed.message_id)) == 1
