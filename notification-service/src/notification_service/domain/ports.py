"""What the domain needs from the outside world, as protocols the adapters satisfy."""

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from interchange_common.actors import SignedInUser
from notification_service.domain.live_push import ConnectionKind, LiveItem, StreamId
from notification_service.domain.model import DeadLetter, KnownOrder, Mail, Notification, Page, Recipient


class Inbox(Protocol):
    """One message's transaction: everything done through it commits together, or not at all."""

    async def mark_handled(self, *, message_id: str, routing_key: str) -> bool:
        """Record the message as handled; False when it already was (a redelivery)."""

    async def recipient(self, *, user_id: uuid.UUID) -> Recipient | None:
        """The recipient as known, locked until the transaction ends."""

    async def save_recipient(self, *, recipient: Recipient) -> None:
        """Store the recipient, unless a newer state of it is already stored."""

    async def order(self, *, order_id: uuid.UUID) -> KnownOrder | None: ...

    async def save_order(self, *, order: KnownOrder) -> None:
        """Remember an order (the first order.placed for it wins)."""

    async def add_notification(self, *, notification: Notification) -> None: ...

    async def queue_mail(self, *, mail: Mail) -> None:
        """Queue the mail for the dispatcher, which sends it once this transaction commits."""


class NotificationStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Inbox]:
        """A transaction for one message; it commits when the block ends without an error."""

    async def list_for_user(self, *, user_id: uuid.UUID, page: Page) -> tuple[list[Notification], int]:
        """One page of the user's notifications, newest first, and their total."""


class DeadLetterStore(Protocol):
    async def add(self, *, dead_letter: DeadLetter) -> None:
        """Store a dead letter; the same message dead at the same instant is stored once."""

    async def list(self, *, page: Page) -> tuple[list[DeadLetter], int]:
        """One page of dead letters, newest first, and their total."""

    def take(self, *, dead_letter_id: uuid.UUID) -> AbstractAsyncContextManager[DeadLetter]:
        """The dead letter, locked (a second taker waits); deleted when the block ends
        without an error, kept when it raises. DeadLetterNotFound when there is none."""

    async def delete(self, *, dead_letter_id: uuid.UUID) -> None:
        """Remove the dead letter, or DeadLetterNotFound."""


class UserDirectory(Protocol):
    async def lookup(self, *, user_id: uuid.UUID) -> Recipient | None:
        """The user as its owner (user-service) knows it now, or None when there is no
        such user; raises when the owner cannot be asked."""


class Republisher(Protocol):
    async def republish(self, *, dead_letter: DeadLetter) -> None:
        """Send the message back to the consumer's queue as a first attempt, confirmed
        by the broker (ReplayFailed otherwise)."""


class RevocationWatch(Protocol):
    async def watch(self, *, user: SignedInUser, end: Callable[[], None]) -> Callable[[], None]:
        """Have ``end`` called once, on this instance, when the user's tokens issued at
        or before ``user.issued_at`` are revoked: soon after the revocation, or at once
        when they already are (``end`` may run before this returns). The function
        returned stops the watch; call it however the connection ends."""


class LiveSubscription(Protocol):
    """One local subscriber of the live fan-out: an SSE stream, a WebSocket or a TCP client."""

    @property
    def ended(self) -> asyncio.Event:
        """Set once the subscription is over; ``end_reason`` says why (domain.live_push)."""

    @property
    def end_reason(self) -> str: ...

    async def next(self) -> LiveItem:
        """The next item to send: the user's notifications in stream order, each once,
        and frames as they came. SubscriptionEnded once over; LiveUnavailable when the
        user's stream cannot be read (the connection ends; its client resumes)."""

    def take_nowait(self) -> LiveItem | None:
        """What ``next`` would give if it is here already, else None (``next`` would
        wait, or read the stream first). SubscriptionEnded once over."""

    def offer(self, item: LiveItem) -> bool:
        """Queue an item for this subscriber alone (a reply) without waiting; False when
        it is over, or its queue is full (it is dropped as TOO_SLOW)."""

    def enter_room(self, room: str) -> None:
        """Hear the room's frames from now on, from every instance."""

    def exit_room(self, room: str) -> None: ...

    def drop(self, *, reason: str) -> None:
        """End it for ``reason``: ``next`` raises SubscriptionEnded(reason) from now on."""

    def close(self) -> None:
        """The connection is done with it (CLOSED); harmless when it is over already."""


class LiveFanout(Protocol):
    """Live push across instances: each user's notification stream, room and private
    messages, and the connections of each user counted on every instance."""

    @property
    def lease_seconds(self) -> float:
        """How long a connection's lease lasts unless renewed (a crashed instance's lapse)."""

    async def subscribe(
        self, *, user_id: uuid.UUID, client_id: str, after: StreamId | None, private: bool = False
    ) -> LiveSubscription:
        """A subscriber for the user's notifications after ``after`` (None: only those to
        come) and the frames sent to ``client_id``; ``private``: the private messages
        sent to the user too (WebSockets)."""

    async def publish_room(self, *, room: str, source: str, frame: dict[str, Any], skip_source: bool) -> None:
        """Send a frame to every subscriber in the room on every instance; with
        ``skip_source`` not to the subscriber ``source`` (which was answered directly)."""

    async def publish_private(self, *, user_id: uuid.UUID, source: str, frame: dict[str, Any]) -> None:
        """Send a frame to every private subscriber of the user on every instance but ``source``."""

    async def acquire_connection(
        self, *, kind: ConnectionKind, user_id: uuid.UUID, connection_id: str, limit: int
    ) -> bool:
        """Lease a connection of the user for ``lease_seconds``, counted across instances;
        False when the user already holds ``limit`` live ones of this kind. Renewing
        always succeeds."""

    async def release_connection(self, *, kind: ConnectionKind, user_id: uuid.UUID, connection_id: str) -> None: ...

    async def first_lapse_in(self, *, kind: ConnectionKind, user_id: uuid.UUID) -> float:
        """Seconds until the earliest of the user's leases of this kind runs out unless
        renewed (0 when none is held)."""
