"""What notification-service does, written against the ports: each entry point calls these.

Notifications.handle   one message → its effect, exactly once per message id
Notifications.list     a user's own notifications, newest first
DeadLetters            record, list, replay and discard dead messages (admins)
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from interchange_common.actors import Actor
from notification_service.domain.errors import InvalidMessage, NotSignedIn, OrderUnknown, PermissionDenied
from notification_service.domain.events import (
    USER_CREATED,
    Event,
    OrderPlaced,
    Unrecognised,
    UserChanged,
    UserDeleted,
    parse_event,
)
from notification_service.domain.model import DeadLetter, Mail, Notification, Page, make_page, parse_dead_letter_id
from notification_service.domain.ports import DeadLetterStore, Inbox, NotificationStore, Republisher, UserDirectory
from notification_service.domain.rules import Effect, known_order, order_effect, recipient_after, welcome

MAX_MESSAGE_ID_LENGTH = 200


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Outcome(StrEnum):
    APPLIED = "applied"  # the event's effect is stored
    DUPLICATE = "duplicate"  # handled before: nothing done again
    IGNORED = "ignored"  # a type this service has no use for (recorded as handled)


@dataclass(frozen=True, slots=True)
class Handled:
    outcome: Outcome
    notification: Notification | None = None
    mail: Mail | None = None


class Notifications:
    """Events in, notifications and mail out; and the notifications a user reads."""

    def __init__(
        self,
        *,
        store: NotificationStore,
        directory: UserDirectory | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock

    async def handle(self, *, message_id: str, routing_key: str, body: Any) -> Handled:
        """Apply one message, exactly once per message id. Raises (and stores nothing)
        when it cannot be applied now, so that the message is retried."""
        if not message_id or len(message_id) > MAX_MESSAGE_ID_LENGTH:
            raise InvalidMessage(f"a message needs an id of 1 to {MAX_MESSAGE_ID_LENGTH} characters")
        event = parse_event(routing_key=routing_key, body=body)
        async with self._store.transaction() as inbox:
            if not await inbox.mark_handled(message_id=message_id, routing_key=routing_key):
                return Handled(outcome=Outcome.DUPLICATE)
            effect = await self._apply(inbox=inbox, event=event)
            if effect is None:
                return Handled(outcome=Outcome.IGNORED)
            if effect.notification is not None:
                await inbox.add_notification(notification=effect.notification)
            if effect.mail is not None:
                await inbox.queue_mail(mail=effect.mail)
        return Handled(outcome=Outcome.APPLIED, notification=effect.notification, mail=effect.mail)

    async def _apply(self, *, inbox: Inbox, event: Event) -> Effect | None:
        now = self._clock()
        if isinstance(event, Unrecognised):
            return None
        if isinstance(event, UserChanged | UserDeleted):
            current = await inbox.recipient(user_id=event.user_id)
            changed = recipient_after(current=current, event=event)
            if changed is not None:
                await inbox.save_recipient(recipient=changed)
            state = changed or current
            # A user.created that arrives after the user's deletion welcomes nobody.
            if (
                isinstance(event, UserChanged)
                and event.type == USER_CREATED
                and state is not None
                and not state.deleted
            ):
                return Effect(notification=welcome(event=event, now=now))
            return Effect()
        if isinstance(event, OrderPlaced):
            order = known_order(event=event)
            await inbox.save_order(order=order)
        else:
            found = await inbox.order(order_id=event.order_id)
            if found is None:
                raise OrderUnknown(f"order {event.order_id} is not known yet")
            order = found
        recipient = await inbox.recipient(user_id=order.user_id)
        if recipient is None and self._directory is not None:
            # Its user.created has not arrived (its outbox relay may be down): ask the
            # user's owner rather than wait, and remember the answer.
            recipient = await self._directory.lookup(user_id=order.user_id)
            if recipient is not None:
                await inbox.save_recipient(recipient=recipient)
        return order_effect(event=event, order=order, recipient=recipient, now=now)

    async def list(self, *, actor: Actor, page: int, limit: int) -> tuple[list[Notification], int, Page]:
        """The actor's own notifications, newest first, the total, and the page served."""
        if actor.user_id is None:
            raise NotSignedIn("notifications belong to a signed-in user")
        served = make_page(page=page, limit=limit)
        found, total = await self._store.list_for_user(user_id=actor.user_id, page=served)
        return found, total, served


def _ensure_admin(actor: Actor) -> None:
    if actor.user_id is None and not actor.service:
        raise NotSignedIn("dead letters are for a signed-in admin")
    if not actor.is_admin:
        raise PermissionDenied("admin role required")


class DeadLetters:
    """Messages that exhausted their retries: kept for a person to inspect, replay or discard."""

    def __init__(self, *, store: DeadLetterStore, republisher: Republisher) -> None:
        self._store = store
        self._republisher = republisher

    async def record(self, *, dead_letter: DeadLetter) -> None:
        await self._store.add(dead_letter=dead_letter)

    async def list(self, *, actor: Actor, page: int, limit: int) -> tuple[list[DeadLetter], int, Page]:
        _ensure_admin(actor)
        served = make_page(page=page, limit=limit)
        found, total = await self._store.list(page=served)
        return found, total, served

    async def replay(self, *, actor: Actor, dead_letter_id: str) -> DeadLetter:
        """Send the message back to its queue, then forget it. Crash-safe both ways: the
        row goes only after the broker confirmed the message (a crash in between sends
        it twice, which the handler's idempotency absorbs), and the row stays locked
        meanwhile, so two concurrent replays of one dead letter publish it once."""
        _ensure_admin(actor)
        async with self._store.take(dead_letter_id=parse_dead_letter_id(dead_letter_id)) as dead_letter:
            await self._republisher.republish(dead_letter=dead_letter)
        return dead_letter

    async def discard(self, *, actor: Actor, dead_letter_id: str) -> None:
        _ensure_admin(actor)
        await self._store.delete(dead_letter_id=parse_dead_letter_id(dead_letter_id))
