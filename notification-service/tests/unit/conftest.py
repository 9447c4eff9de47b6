"""Fakes for notification-service's ports: in-memory stores with real transaction
semantics (a block that raises leaves nothing behind), a recording republisher, and
a revocation watch whose marks are set by the test."""

import contextlib
import copy
from datetime import UTC, datetime

import pytest

from notification_service.domain.errors import DeadLetterNotFound
from notification_service.domain.live import OpenConnections
from notification_service.domain.usecases import DeadLetters, Notifications


class State:
    def __init__(self):
        self.handled = {}
        self.recipients = {}
        self.orders = {}
        self.notifications = {}
        self.mails = {}


class FakeInbox:
    def __init__(self, state):
        self.state = state

    async def mark_handled(self, *, message_id, routing_key):
        if message_id in self.state.handled:
            return False
        self.state.handled[message_id] = routing_key
        return True

    async def recipient(self, *, user_id):
        return self.state.recipients.get(user_id)

    async def save_recipient(self, *, recipient):
        self.state.recipients[recipient.user_id] = recipient

    async def order(self, *, order_id):
        return self.state.orders.get(order_id)

    async def save_order(self, *, order):
        self.state.orders.setdefault(order.order_id, order)

    async def add_notification(self, *, notification):
        self.state.notifications.setdefault(notification.event_id, notification)

    async def queue_mail(self, *, mail):
        self.state.mails.setdefault(mail.event_id, mail)


class FakeNotificationStore:
    def __init__(self):
        self.state = State()
        self.commits = 0

    @contextlib.asynccontextmanager
    async def transaction(self):
        working = copy.deepcopy(self.state)
        yield FakeInbox(working)
        self.state = working
        self.commits += 1

    async def list_for_user(self, *, user_id, page):
        mine = sorted(
            (n for n in self.state.notifications.values() if n.user_id == user_id),
            key=lambda n: (n.created_at, n.id),
            reverse=True,
        )
        return mine[page.offset : page.offset + page.limit], len(mine)


class FakeDeadLetterStore:
    def __init__(self):
        self.rows = {}

    async def add(self, *, dead_letter):
        if not any(
            (row.message_id, row.dead_at) == (dead_letter.message_id, dead_letter.dead_at) for row in self.rows.values()
        ):
            self.rows[dead_letter.id] = dead_letter

    async def list(self, *, page):
        rows = sorted(self.rows.values(), key=lambda row: (row.dead_at, row.id), reverse=True)
        return rows[page.offset : page.offset + page.limit], len(rows)

    @contextlib.asynccontextmanager
    async def take(self, *, dead_letter_id):
        if dead_letter_id not in self.rows:
            raise DeadLetterNotFound(str(dead_letter_id))
        yield self.rows[dead_letter_id]
        del self.rows[dead_letter_id]

    async def delete(self, *, dead_letter_id):
        if self.rows.pop(dead_letter_id, None) is None:
            raise DeadLetterNotFound(str(dead_letter_id))


class FakeRepublisher:
    def __init__(self):
        self.sent = []
        self.fail_with = None

    async def republish(self, *, dead_letter):
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(dead_letter)


class FakeRevocations:
    """The RevocationWatch port over the real OpenConnections, with the marks in a dict:
    ``revoke`` is a revocation heard from the channel."""

    def __init__(self):
        self.connections = OpenConnections()
        self.marks = {}

    async def watch(self, *, user, end):
        forget = self.connections.add(user_id=user.user_id, issued_at=user.issued_at, end=end)
        if user.user_id in self.marks:
            self.connections.revoke(user_id=user.user_id, revoked_at=self.marks[user.user_id])
        return forget

    def revoke(self, *, user_id, at):
        self.marks[user_id] = max(at, self.marks.get(user_id, at))
        return self.connections.revoke(user_id=user_id, revoked_at=self.marks[user_id])


NOW = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


@pytest.fixture
def store():
    return FakeNotificationStore()


@pytest.fixture
def notifications(store):
    return Notifications(store=store, clock=lambda: NOW)


@pytest.fixture
def dead_letter_store():
    return FakeDeadLetterStore()


@pytest.fixture
def republisher():
    return FakeRepublisher()


@pytest.fixture
def dead_letters(dead_letter_store, republisher):
    return DeadLetters(store=dead_letter_store, republisher=republisher)


@pytest.fixture
def revocations():
    return FakeRevocations()
