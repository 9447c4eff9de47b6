"""What notification-service keeps.

Recipient      a user as the user events described it (email, name, deleted), as of a time
KnownOrder     what order.placed said about an order; later order events name only its id
Notification   one line in a user's notification list, made by one event
Mail           one mail to send, made by one event; its Message-ID comes from the event id
DeadLetter     a message that exhausted its retries, with its failure timeline
Page           a page of a list
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from notification_service.domain.errors import DeadLetterNotFound, InvalidRequest

MAX_PAGE_SIZE = 100
MAIL_DOMAIN = "interchange.local"
# Ids of what one event makes are derived from the event id: the same event always
# makes the same notification and the same mail, whoever handles it and how often.
_IDS = uuid.UUID("1b0f6a52-5d1c-4c55-9f0e-8d2f1f3f4e21")


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: uuid.UUID
    email: str | None  # None once deleted
    name: str | None
    deleted: bool
    as_of: datetime  # occurred_at of the newest user event applied


@dataclass(frozen=True, slots=True)
class OrderItem:
    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def subtotal(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class KnownOrder:
    order_id: uuid.UUID
    user_id: uuid.UUID
    items: tuple[OrderItem, ...]
    total: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Notification:
    id: uuid.UUID
    user_id: uuid.UUID
    type: str  # the event type
    title: str
    body: str
    data: dict[str, Any]
    event_id: uuid.UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Mail:
    id: uuid.UUID
    event_id: uuid.UUID
    to_address: str
    to_name: str
    subject: str
    body: str
    created_at: datetime

    @property
    def message_id(self) -> str:
        """The Message-ID header: a mail sent again (after a crash between send and
        record) carries the same one, so a mailbox can tell it is the same mail."""
        return message_id_of(event_id=self.event_id)


def message_id_of(*, event_id: uuid.UUID) -> str:
    return f"<{event_id}@{MAIL_DOMAIN}>"


def parse_dead_letter_id(raw: str) -> uuid.UUID:
    """An id from outside. A malformed id names no dead letter: report it as not found."""
    try:
        return uuid.UUID(raw)
    except ValueError as e:
        raise DeadLetterNotFound(raw) from e


def notification_id_of(*, event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_IDS, f"notification:{event_id}")


def mail_id_of(*, event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_IDS, f"mail:{event_id}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: uuid.UUID
    message_id: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]  # JSON-safe copies of the message's headers
    correlation_id: str | None
    error: str
    attempts: int
    failed_at: tuple[datetime, ...]  # when each failed attempt ended
    dead_at: datetime
    stored_at: datetime = field(compare=False)


@dataclass(frozen=True, slots=True)
class Page:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def make_page(*, page: int, limit: int) -> Page:
    """A page of a list; a limit over the cap is lowered to the cap."""
    if page < 1:
        raise InvalidRequest("page starts at 1")
    if limit < 1:
        raise InvalidRequest("limit must be at least 1")
    return Page(page=page, limit=min(limit, MAX_PAGE_SIZE))
