"""Fakes for notification-service's ports: in-memory stores with real transaction
semantics (a block that raises leaves nothing behind), a recording republisher, a
revocation watch whose marks are set by the test, and the live fan-out in one process.
Each is typed against its port: the fixtures that wire them (and the tests that pass
them on) are checked by mypy."""

import asyncio
import contextlib
import copy
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from interchange_common.actors import SignedInUser
from notification_service.adapters.errors import LiveUnavailable
from notification_service.domain.errors import DeadLetterNotFound, SubscriptionEnded
from notification_service.domain.live_connections import OpenConnections
from notification_service.domain.live_push import (
    CLOSED,
    TOO_SLOW,
    ConnectionKind,
    LiveFrame,
    LiveItem,
    LiveNotification,
    StreamId,
)
from notification_service.domain.model import DeadLetter, KnownOrder, Mail, Notification, Page, Recipient
from notification_service.domain.usecases import DeadLetters, Notifications


class State:
    def __init__(self) -> None:
        self.handled: dict[str, str] = {}
        self.recipients: dict[uuid.UUID, Recipient] = {}
        self.orders: dict[uuid.UUID, KnownOrder] = {}
        self.notifications: dict[uuid.UUID, Notification] = {}
        self.mails: dict[uuid.UUID, Mail] = {}


class FakeInbox:
    """Inbox, on the working copy of one transaction."""

    def __init__(self, state: State) -> None:
        self.state = state

    async def mark_handled(self, *, message_id: str, routing_key: str) -> bool:
        if message_id in self.state.handled:
            return False
        self.state.handled[message_id] = routing_key
        return True

    async def recipient(self, *, user_id: uuid.UUID) -> Recipient | None:
        return self.state.recipients.get(user_id)

    async def save_recipient(self, *, recipient: Recipient) -> None:
        self.state.recipients[recipient.user_id] = recipient

    async def order(self, *, order_id: uuid.UUID) -> KnownOrder | None:
        return self.state.orders.get(order_id)

    async def save_order(self, *, order: KnownOrder) -> None:
        self.state.orders.setdefault(order.order_id, order)

    async def add_notification(self, *, notification: Notification) -> None:
        self.state.notifications.setdefault(notification.event_id, notification)

    async def queue_mail(self, *, mail: Mail) -> None:
        self.state.mails.setdefault(mail.event_id, mail)


class FakeNotificationStore:
    """NotificationStore: a transaction works on a copy, kept when its block ends without an error."""

    def __init__(self) -> None:
        self.state = State()
        self.commits = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeInbox]:
        working = copy.deepcopy(self.state)
        yield FakeInbox(working)
        self.state = working
        self.commits += 1

    async def list_for_user(self, *, user_id: uuid.UUID, page: Page) -> tuple[list[Notification], int]:
        mine = sorted(
            (n for n in self.state.notifications.values() if n.user_id == user_id),
            key=lambda n: (n.created_at, n.id),
            reverse=True,
        )
        return mine[page.offset : page.offset + page.limit], len(mine)


class FakeDeadLetterStore:
    """DeadLetterStore in a dict; a dead letter taken is deleted when the block ends without an error."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, DeadLetter] = {}

    async def add(self, *, dead_letter: DeadLetter) -> None:
        if not any(
            (row.message_id, row.dead_at) == (dead_letter.message_id, dead_letter.dead_at) for row in self.rows.values()
        ):
            self.rows[dead_letter.id] = dead_letter

    async def list(self, *, page: Page) -> tuple[list[DeadLetter], int]:
        rows = sorted(self.rows.values(), key=lambda row: (row.dead_at, row.id), reverse=True)
        return rows[page.offset : page.offset + page.limit], len(rows)

    @contextlib.asynccontextmanager
    async def take(self, *, dead_letter_id: uuid.UUID) -> AsyncIterator[DeadLetter]:
        if dead_letter_id not in self.rows:
            raise DeadLetterNotFound(str(dead_letter_id))
        yield self.rows[dead_letter_id]
        del self.rows[dead_letter_id]

    async def delete(self, *, dead_letter_id: uuid.UUID) -> None:
        if self.rows.pop(dead_letter_id, None) is None:
            raise DeadLetterNotFound(str(dead_letter_id))


class FakeRepublisher:
    """Republisher: records what it sends; ``fail_with`` plays a broker that does not confirm."""

    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []
        self.fail_with: Exception | None = None

    async def republish(self, *, dead_letter: DeadLetter) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(dead_letter)


class FakeRevocations:
    """RevocationWatch over the real OpenConnections, with the marks in a dict:
    ``revoke`` is a revocation heard from the channel."""

    def __init__(self) -> None:
        self.connections = OpenConnections()
        self.marks: dict[uuid.UUID, float] = {}

    async def watch(self, *, user: SignedInUser, end: Callable[[], None]) -> Callable[[], None]:
        forget = self.connections.add(user_id=user.user_id, issued_at=user.issued_at, end=end)
        if user.user_id in self.marks:
            self.connections.revoke(user_id=user.user_id, revoked_at=self.marks[user.user_id])
        return forget

    def revoke(self, *, user_id: uuid.UUID, at: float) -> int:
        self.marks[user_id] = max(at, self.marks.get(user_id, at))
        return self.connections.revoke(user_id=user_id, revoked_at=self.marks[user_id])


class InMemorySubscription:
    """LiveSubscription: the backlog first, then what is offered, in order. An end
    empties the queue and wakes ``next``, as the real one does."""

    def __init__(
        self,
        *,
        fanout: "InMemoryFanout",
        user_id: uuid.UUID,
        client_id: str,
        private: bool,
        backlog: list[LiveNotification],
        queue_size: int,
    ) -> None:
        self.user_id = user_id
        self.client_id = client_id
        self.private = private
        self.rooms: set[str] = set()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.failure: Exception | None = None  # raised by ``next`` (a stream that cannot be read)
        self._fanout = fanout
        self._backlog = list(backlog)
        self._queue: asyncio.Queue[LiveItem | None] = asyncio.Queue(maxsize=queue_size)

    async def next(self) -> LiveItem:
        if self.failure is not None:
            raise self.failure
        if not self.ended.is_set():
            if self._backlog:
                return self._backlog.pop(0)
            item = await self._queue.get()
            if item is not None:
                return item
        raise SubscriptionEnded(self.end_reason)

    def take_nowait(self) -> LiveItem | None:
        if self.failure is not None:
            return None  # ``next`` raises it
        if self.ended.is_set():
            raise SubscriptionEnded(self.end_reason)
        if self._backlog:
            return self._backlog.pop(0)
        if self._queue.empty():
            return None
        item = self._queue.get_nowait()
        if item is None:
            raise SubscriptionEnded(self.end_reason)
        return item

    def offer(self, item: LiveItem) -> bool:
        if self.ended.is_set():
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.drop(reason=TOO_SLOW)
            return False
        return True

    def enter_room(self, room: str) -> None:
        if self in self._fanout.subscriptions:
            self.rooms.add(room)

    def exit_room(self, room: str) -> None:
        self.rooms.discard(room)

    def drop(self, *, reason: str) -> None:
        if self.ended.is_set():
            return
        if self in self._fanout.subscriptions:
            self._fanout.subscriptions.remove(self)
        self.rooms.clear()
        self.end_reason = reason
        self.ended.set()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def close(self) -> None:
        self.drop(reason=CLOSED)


class InMemoryFanout:
    """LiveFanout in one process: each user's stream a list (stream ids 1-0, 2-0, …),
    room and private frames handed at once to the subscribers here, leases in a dict
    by ``clock``. ``down`` plays Redis unreachable: every call that would talk to it
    raises LiveUnavailable. ``published`` keeps every room and private frame sent."""

    def __init__(
        self, *, lease_seconds: float = 60.0, queue_size: int = 64, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lease_seconds = lease_seconds
        self.down = False
        self.streams: dict[uuid.UUID, list[LiveNotification]] = {}
        self.subscriptions: list[InMemorySubscription] = []
        self.published: list[dict[str, Any]] = []
        self.leases: dict[tuple[ConnectionKind, uuid.UUID], dict[str, float]] = {}
        self.acquired = 0  # calls that were granted a lease or renewed one
        self._queue_size = queue_size
        self.clock = clock

    def push(self, *, user_id: uuid.UUID, payload: bytes) -> LiveNotification:
        """A notification added to the user's stream, and heard by the user's subscribers."""
        stream = self.streams.setdefault(user_id, [])
        item = LiveNotification(stream_id=StreamId(len(stream) + 1, 0), payload=payload)
        stream.append(item)
        for subscription in list(self.subscriptions):
            if subscription.user_id == user_id:
                subscription.offer(item)
        return item

    def held(self, *, kind: ConnectionKind, user_id: uuid.UUID) -> set[str]:
        """The connections of the user whose leases have not lapsed."""
        now = self.clock()
        return {key for key, lapse in self.leases.get((kind, user_id), {}).items() if lapse > now}

    def _check(self) -> None:
        if self.down:
            raise LiveUnavailable("Redis is down (in this test)")

    async def subscribe(
        self, *, user_id: uuid.UUID, client_id: str, after: StreamId | None, private: bool = False
    ) -> InMemorySubscription:
        self._check()
        backlog = [] if after is None else [item for item in self.streams.get(user_id, []) if item.stream_id > after]
        subscription = InMemorySubscription(
            fanout=self,
            user_id=user_id,
            client_id=client_id,
            private=private,
            backlog=backlog,
            queue_size=self._queue_size,
        )
        self.subscriptions.append(subscription)
        return subscription

    async def publish_room(self, *, room: str, source: str, frame: dict[str, Any], skip_source: bool) -> None:
        self._check()
        self.published.append(frame)
        for subscription in list(self.subscriptions):
            if room in subscription.rooms and not (skip_source and subscription.client_id == source):
                subscription.offer(LiveFrame(data=orjson.dumps(frame)))

    async def publish_private(self, *, user_id: uuid.UUID, source: str, frame: dict[str, Any]) -> None:
        self._check()
        self.published.append(frame)
        for subscription in list(self.subscriptions):
            if subscription.user_id == user_id and subscription.private and subscription.client_id != source:
                subscription.offer(LiveFrame(data=orjson.dumps(frame)))

    async def acquire_connection(
        self, *, kind: ConnectionKind, user_id: uuid.UUID, connection_id: str, limit: int
    ) -> bool:
        self._check()
        held = self.held(kind=kind, user_id=user_id)
        if connection_id not in held and len(held) >= limit:
            return False
        self.leases.setdefault((kind, user_id), {})[connection_id] = self.clock() + self.lease_seconds
        self.acquired += 1
        return True

    async def release_connection(self, *, kind: ConnectionKind, user_id: uuid.UUID, connection_id: str) -> None:
        self._check()
        self.leases.get((kind, user_id), {}).pop(connection_id, None)

    async def first_lapse_in(self, *, kind: ConnectionKind, user_id: uuid.UUID) -> float:
        self._check()
        now = self.clock()
        lapses = [lapse for lapse in self.leases.get((kind, user_id), {}).values() if lapse > now]
        return min(lapses) - now if lapses else 0.0


NOW = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


@pytest.fixture
def store() -> FakeNotificationStore:
    return FakeNotificationStore()


@pytest.fixture
def notifications(store: FakeNotificationStore) -> Notifications:
    return Notifications(store=store, clock=lambda: NOW)


@pytest.fixture
def dead_letter_store() -> FakeDeadLetterStore:
    return FakeDeadLetterStore()


@pytest.fixture
def republisher() -> FakeRepublisher:
    return FakeRepublisher()


@pytest.fixture
def dead_letters(dead_letter_store: FakeDeadLetterStore, republisher: FakeRepublisher) -> DeadLetters:
    return DeadLetters(store=dead_letter_store, republisher=republisher)


@pytest.fixture
def revocations() -> FakeRevocations:
    return FakeRevocations()


@pytest.fixture
def fanout() -> InMemoryFanout:
    return InMemoryFanout()
