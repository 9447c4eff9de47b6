"""What the domain needs from the outside world, as protocols the adapters satisfy."""

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from interchange_common.actors import SignedInUser
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
