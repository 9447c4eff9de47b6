"""What the order domain needs from storage."""

import uuid
from typing import Protocol

from order_service.domain.order import Event, Order


class OrderStore(Protocol):
    async def load(self, *, order_id: uuid.UUID) -> Order | None:
        """The order as of its last event, or None."""

    async def save(self, *, order: Order | None, events: list[Event], order_id: uuid.UUID) -> Order:
        """Append the events after ``order``'s version (ConcurrencyConflict if the
        stream moved on) and return the order after them."""
