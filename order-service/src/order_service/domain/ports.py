"""What the order domain needs from the outside: storage, the users' status, the
read model, its projection's parked events and idempotency keys. Adapters implement
these; tests use fakes. A read model, parked-event or key store whose database cannot
serve the call raises interchange_common's DatabaseUnavailable."""

import enum
import uuid
from typing import Protocol

from interchange_common.events import RecordedEvent
from interchange_common.projections import ParkedEvent
from order_service.domain.order import Event, Order


class OrderStore(Protocol):
    async def load(self, *, order_id: uuid.UUID) -> Order | None:
        """The order as of its last event, or None."""

    async def save(self, *, order: Order | None, events: list[Event], order_id: uuid.UUID) -> Order:
        """Append the events after ``order``'s version (ConcurrencyConflict if the
        stream moved on) and return the order after them."""

    async def history(self, *, order_id: uuid.UUID) -> list[RecordedEvent]:
        """Every event of the order, oldest first (empty: no such order)."""


class UserStatus(enum.Enum):
    """A user's status as user-service has it (whether that user may order is
    usecases.check_may_order's to say)."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    SUSPENDED = "SUSPENDED"
    UNKNOWN = "UNKNOWN"  # user-service named none of the above


class UserDirectory(Protocol):
    async def status(self, *, user_id: uuid.UUID) -> UserStatus | None:
        """The user's status now, or None when there is no such user;
        UserCheckUnavailable when user-service cannot be asked."""


class OrderReadModel(Protocol):
    async def get(self, *, order_id: uuid.UUID) -> Order | None:
        """The order as the read model has it: at least as new as the last command
        that answered, or None when the model has not seen it."""

    async def record(self, *, order: Order) -> None:
        """Bring the model up to ``order``, the result of a command, unless it is
        newer already: once the command answers, every instance reads it."""

    async def list_for_user(self, *, user_id: uuid.UUID, page: int, limit: int) -> tuple[list[Order], int]:
        """One page of the user's orders, newest first, and how many there are."""


class ParkedEvents(Protocol):
    """The events the read model's projection parked (interchange_common.projections)."""

    async def list(self, *, page: int, limit: int) -> tuple[list[ParkedEvent], int]:
        """One page of them, oldest first, and how many there are."""

    async def replay(self, *, parked_id: uuid.UUID) -> ParkedEvent:
        """Apply it to the read model now and forget it; ParkedEventNotFound, or
        ParkedEventStillFails (it stays parked, with the new error)."""

    async def skip(self, *, parked_id: uuid.UUID) -> ParkedEvent:
        """Forget it: the read model goes without it; ParkedEventNotFound."""


class IdempotencyKeys(Protocol):
    async def claim(self, *, user_id: uuid.UUID, key: str, fingerprint: str, order_id: uuid.UUID) -> uuid.UUID:
        """The order id the user's key stands for: ``order_id`` when the key is new
        (or expired), the first request's order id when the same request comes
        again; IdempotencyKeyReused when the key came with another request."""
