"""The use cases against fake stores: exactly-once effects, retries, lists and dead letters."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from interchange_common.actors import Actor
from notification_service.adapters.errors import ReplayFailed, UserDirectoryUnavailable
from notification_service.domain.errors import (
    DeadLetterNotFound,
    InvalidMessage,
    InvalidRequest,
    NotSignedIn,
    OrderUnknown,
    PermissionDenied,
    RecipientUnknown,
)
from notification_service.domain.model import DeadLetter, Recipient
from notification_service.domain.usecases import Notifications, Outcome


async def deliver(notifications, message):
    return await notifications.handle(message_id=message.message_id, routing_key=message.routing_key, body=message.body)


async def known_user(notifications, events, **kwargs):
    user_id = uuid.uuid4()
    await deliver(notifications, events.user(user_id=user_id, **kwargs))
    return user_id


async def test_an_order_for_a_known_user_makes_one_notification_and_one_mail(notifications, store, events):
    user_id = await known_user(notifications, events, email="ada@example.com")
    message = events.order(order_id=uuid.uuid4(), user_id=user_id)
    handled = await deliver(notifications, message)
    assert handled.outcome is Outcome.APPLIED
    assert handled.mail is not None
    assert handled.mail.to_address == "ada@example.com"
    assert [n.type for n in store.state.notifications.values()] == ["user.created", "order.placed"]
    assert len(store.state.mails) == 1


async def test_a_redelivered_message_has_no_second_effect(notifications, store, events):
    user_id = await known_user(notifications, events)
    message = events.order(order_id=uuid.uuid4(), user_id=user_id)
    await deliver(notifications, message)
    again = await deliver(notifications, message)
    assert again.outcome is Outcome.DUPLICATE
    assert again.mail is None
    assert len(store.state.mails) == 1
    assert len(store.state.notifications) == 2  # the welcome and the order


async def test_an_order_before_its_user_fails_leaves_nothing_and_succeeds_later(notifications, store, events):
    user_id = uuid.uuid4()
    message = events.order(order_id=uuid.uuid4(), user_id=user_id)
    with pytest.raises(RecipientUnknown):
        await deliver(notifications, message)
    assert message.message_id not in store.state.handled  # so the retry is not taken for a duplicate
    assert store.state.orders == {}
    assert store.state.mails == {}
    await deliver(notifications, events.user(user_id=user_id))
    assert (await deliver(notifications, message)).outcome is Outcome.APPLIED
    assert len(store.state.mails) == 1


async def test_a_status_change_finds_its_user_through_the_order(notifications, store, events):
    user_id = await known_user(notifications, events)
    order_id = uuid.uuid4()
    await deliver(notifications, events.order(order_id=order_id, user_id=user_id))
    shipped = await deliver(notifications, events.order("order.shipped", order_id=order_id))
    cancelled = await deliver(notifications, events.order("order.cancelled", order_id=order_id))
    assert shipped.notification is not None
    assert shipped.notification.user_id == user_id
    assert shipped.mail is None
    assert cancelled.mail is not None
    assert "Total: 12.50 EUR" in cancelled.mail.body


async def test_a_status_change_of_an_unknown_order_is_retried(notifications, store, events):
    message = events.order("order.confirmed", order_id=uuid.uuid4())
    with pytest.raises(OrderUnknown):
        await deliver(notifications, message)
    assert store.state.handled == {}


async def test_unknown_types_are_recorded_and_ignored(notifications, store, events):
    message = events.order("order.refunded", order_id=uuid.uuid4())
    handled = await deliver(notifications, message)
    assert handled.outcome is Outcome.IGNORED
    assert store.state.handled == {message.message_id: "order.refunded"}
    assert store.state.notifications == {}


async def test_an_invalid_message_is_not_recorded(notifications, store, events):
    message = events.order(order_id=uuid.uuid4(), user_id=uuid.uuid4())
    message.body["data"]["items"] = []
    with pytest.raises(InvalidMessage):
        await deliver(notifications, message)
    with pytest.raises(InvalidMessage):
        await notifications.handle(message_id="", routing_key="user.created", body={})
    assert store.state.handled == {}


async def test_an_older_user_update_arriving_late_does_not_overwrite(notifications, store, events):
    user_id = uuid.uuid4()
    created = events.user(user_id=user_id, email="v1@example.com")
    first_update = events.user("user.updated", user_id=user_id, email="v2@example.com")
    second_update = events.user("user.updated", user_id=user_id, email="v3@example.com")
    for message in (created, second_update, first_update):
        await deliver(notifications, message)
    assert store.state.recipients[user_id].email == "v3@example.com"
    handled = await deliver(notifications, events.order(order_id=uuid.uuid4(), user_id=user_id))
    assert handled.mail is not None
    assert handled.mail.to_address == "v3@example.com"


async def test_a_created_event_after_the_deletion_welcomes_nobody(notifications, store, events):
    user_id = uuid.uuid4()
    created = events.user(user_id=user_id)
    await deliver(notifications, events.user("user.deleted", user_id=user_id))
    handled = await deliver(notifications, created)
    assert handled.notification is None
    assert store.state.recipients[user_id].deleted
    order = await deliver(notifications, events.order(order_id=uuid.uuid4(), user_id=user_id))
    assert (order.outcome, order.notification, order.mail) == (Outcome.APPLIED, None, None)


async def test_a_user_lists_their_own_notifications_newest_first(events, store):
    times = iter(datetime(2026, 11, 28, 12, minute, tzinfo=UTC) for minute in range(60))
    notifications = Notifications(store=store, clock=lambda: next(times))
    me = await known_user(notifications, events)
    other = await known_user(notifications, events)
    for _ in range(3):
        await deliver(notifications, events.order(order_id=uuid.uuid4(), user_id=me))
    found, total, page = await notifications.list(actor=Actor(user_id=me), page=1, limit=2)
    assert total == 4
    assert (page.page, page.limit) == (1, 2)
    assert [n.created_at for n in found] == sorted((n.created_at for n in found), reverse=True)
    assert all(n.user_id == me for n in found)
    rest, _, _ = await notifications.list(actor=Actor(user_id=me), page=2, limit=2)
    assert [n.type for n in rest] == ["order.placed", "user.created"]
    assert (await notifications.list(actor=Actor(user_id=other), page=1, limit=10))[1] == 1


async def test_lists_cap_the_limit_and_refuse_bad_pages(notifications):
    me = Actor(user_id=uuid.uuid4())
    assert (await notifications.list(actor=me, page=1, limit=10_000))[2].limit == 100
    with pytest.raises(InvalidRequest):
        await notifications.list(actor=me, page=0, limit=10)
    with pytest.raises(InvalidRequest):
        await notifications.list(actor=me, page=1, limit=0)


@pytest.mark.parametrize("actor", [Actor.anonymous(), Actor.trusted_service()])
async def test_notifications_need_a_signed_in_user(notifications, actor):
    with pytest.raises(NotSignedIn):
        await notifications.list(actor=actor, page=1, limit=10)


def dead_letter(**changes):
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "message_id": str(uuid.uuid4()),
        "routing_key": "order.placed",
        "body": b"{}",
        "headers": {},
        "correlation_id": None,
        "error": "RecipientUnknown: user x is not known yet",
        "attempts": 4,
        "failed_at": (now,),
        "dead_at": now,
        "stored_at": now,
    }
    return DeadLetter(**(values | changes))


ADMIN = Actor(user_id=uuid.uuid4(), roles=frozenset({"admin", "user"}))
USER = Actor(user_id=uuid.uuid4(), roles=frozenset({"user"}))


async def test_dead_letters_are_for_admins(dead_letters, dead_letter_store):
    letter = dead_letter()
    await dead_letters.record(dead_letter=letter)
    await dead_letters.record(dead_letter=dead_letter(message_id=letter.message_id))  # redelivered: same dead_at
    assert (await dead_letters.list(actor=ADMIN, page=1, limit=10))[1] == 1
    assert (await dead_letters.list(actor=Actor.trusted_service(), page=1, limit=10))[1] == 1
    for call in (
        lambda: dead_letters.list(actor=USER, page=1, limit=10),
        lambda: dead_letters.replay(actor=USER, dead_letter_id=str(letter.id)),
        lambda: dead_letters.discard(actor=USER, dead_letter_id="not-even-an-id"),
    ):
        with pytest.raises(PermissionDenied):
            await call()
    with pytest.raises(NotSignedIn):
        await dead_letters.list(actor=Actor.anonymous(), page=1, limit=10)
    assert letter.id in dead_letter_store.rows


async def test_replay_publishes_then_forgets(dead_letters, dead_letter_store, republisher):
    letter = dead_letter()
    await dead_letters.record(dead_letter=letter)
    assert await dead_letters.replay(actor=ADMIN, dead_letter_id=str(letter.id)) == letter
    assert republisher.sent == [letter]
    assert dead_letter_store.rows == {}
    with pytest.raises(DeadLetterNotFound):
        await dead_letters.replay(actor=ADMIN, dead_letter_id=str(letter.id))


async def test_a_replay_the_broker_refused_keeps_the_dead_letter(dead_letters, dead_letter_store, republisher):
    letter = dead_letter()
    await dead_letters.record(dead_letter=letter)
    republisher.fail_with = ReplayFailed("nope")
    with pytest.raises(ReplayFailed):
        await dead_letters.replay(actor=ADMIN, dead_letter_id=str(letter.id))
    assert letter.id in dead_letter_store.rows


@pytest.mark.parametrize("raw", ["nope", "", "123", str(uuid.uuid4())])
async def test_unknown_or_malformed_ids_are_not_found(dead_letters, raw):
    with pytest.raises(DeadLetterNotFound):
        await dead_letters.discard(actor=ADMIN, dead_letter_id=raw)
    with pytest.raises(DeadLetterNotFound):
        await dead_letters.replay(actor=ADMIN, dead_letter_id=raw)


class FakeDirectory:
    """UserDirectory: user-service as the lookup sees it, known users, or down."""

    def __init__(self, *, users: dict[uuid.UUID, Recipient] | None = None, down: bool = False) -> None:
        self.users = users or {}
        self.down = down
        self.asked: list[uuid.UUID] = []

    async def lookup(self, *, user_id: uuid.UUID) -> Recipient | None:
        self.asked.append(user_id)
        if self.down:
            raise UserDirectoryUnavailable("user-service: UNAVAILABLE")
        return self.users.get(user_id)


def recipient(user_id, *, email="late@example.com", as_of=datetime(2026, 11, 27, 12, tzinfo=UTC)):
    return Recipient(user_id=user_id, email=email, name="Late", deleted=False, as_of=as_of)


async def test_an_order_before_its_user_event_asks_user_service_and_remembers(store, events):
    user_id = uuid.uuid4()
    directory = FakeDirectory(users={user_id: recipient(user_id)})
    notifications = Notifications(store=store, directory=directory)
    handled = await deliver(notifications, events.order(order_id=uuid.uuid4(), user_id=user_id))
    assert handled.outcome is Outcome.APPLIED
    assert handled.mail is not None
    assert handled.mail.to_address == "late@example.com"
    await deliver(notifications, events.order(order_id=uuid.uuid4(), user_id=user_id))
    assert directory.asked == [user_id]  # the answer was kept


async def test_a_user_service_that_does_not_know_the_user_leaves_the_order_to_retry(store, events):
    notifications = Notifications(store=store, directory=FakeDirectory())
    message = events.order(order_id=uuid.uuid4(), user_id=uuid.uuid4())
    with pytest.raises(RecipientUnknown):
        await deliver(notifications, message)
    assert message.message_id not in store.state.handled


async def test_a_user_service_that_is_down_leaves_nothing_behind(store, events):
    notifications = Notifications(store=store, directory=FakeDirectory(down=True))
    message = events.order(order_id=uuid.uuid4(), user_id=uuid.uuid4())
    with pytest.raises(UserDirectoryUnavailable):
        await deliver(notifications, message)
    assert (store.state.handled, store.state.orders, store.state.mails) == ({}, {}, {})
