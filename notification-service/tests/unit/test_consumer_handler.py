"""The consumer's handler: JSON in, the use case called, and the fault-injection switch."""

import os
import signal
import uuid

import pytest

from interchange_common.messaging import Delivery
from notification_service.domain.errors import InvalidMessage
from notification_service.entrypoints.consumer import message_handler


def delivery_of(message, *, message_id=None):
    return Delivery(
        message_id=message.message_id if message_id is None else message_id,
        routing_key=message.routing_key,
        body=message.bytes(),
        headers={},
        attempt=1,
    )


@pytest.fixture
def kills(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: calls.append((pid, sig)))
    return calls


async def test_a_body_that_is_not_json_is_refused(notifications):
    handle = message_handler(notifications=notifications)
    with pytest.raises(InvalidMessage, match="JSON"):
        await handle(Delivery(message_id="m", routing_key="user.created", body=b"{", headers={}, attempt=1))


async def test_without_a_message_id_the_event_id_keys_the_message(notifications, store, events):
    message = events.user(user_id=uuid.uuid4())
    await message_handler(notifications=notifications)(delivery_of(message, message_id=""))
    assert list(store.state.handled) == [message.message_id]


async def test_the_switch_kills_after_the_commit_of_a_mail_and_only_then(notifications, store, events, kills):
    handle = message_handler(notifications=notifications, crash_after_commit=True)
    user_id = uuid.uuid4()
    await handle(delivery_of(events.user(user_id=user_id)))
    assert kills == []  # no mail queued: nothing to prove with a crash
    order = events.order(order_id=uuid.uuid4(), user_id=user_id)
    commits = store.commits
    await handle(delivery_of(order))
    assert kills == [(os.getpid(), signal.SIGKILL)]
    assert store.commits == commits + 1  # killed after the commit
    await handle(delivery_of(order))  # the redelivery after a restart: nothing queued, no kill
    assert len(kills) == 1


async def test_without_the_switch_nothing_is_killed(notifications, events, kills):
    handle = message_handler(notifications=notifications)
    user_id = uuid.uuid4()
    await handle(delivery_of(events.user(user_id=user_id)))
    await handle(delivery_of(events.order(order_id=uuid.uuid4(), user_id=user_id)))
    assert kills == []
