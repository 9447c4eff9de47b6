"""Messages as the producers send them (event-store's relay, user-service's outbox), for every suite."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest


@dataclass
class Message:
    message_id: str
    routing_key: str
    body: dict[str, Any] = field(default_factory=dict)

    def bytes(self) -> bytes:
        return orjson.dumps(self.body)


class Events:
    """Builds order.* bodies shaped like event-store's relay and user.* bodies shaped
    like user-service's outbox; times move forward one second per event unless given."""

    def __init__(self) -> None:
        self._clock = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def _now(self, at: datetime | None) -> datetime:
        if at is not None:
            return at
        self._clock += timedelta(seconds=1)
        return self._clock

    def user(
        self,
        routing_key: str = "user.created",
        *,
        user_id: uuid.UUID,
        email: str | None = None,
        name: str = "Ada",
        at: datetime | None = None,
    ) -> Message:
        event_id = str(uuid.uuid4())
        data: dict[str, Any] = {"id": str(user_id)}
        if routing_key != "user.deleted":
            data |= {
                "name": name,
                "email": email or f"u-{str(user_id)[:8]}@example.com",
                "roles": ["user"],
                "status": "ACTIVE",
            }
        body = {
            "id": event_id,
            "type": routing_key,
            "occurred_at": self._now(at).isoformat().replace("+00:00", "Z"),
            "correlation_id": uuid.uuid4().hex,
            "data": data,
        }
        return Message(message_id=event_id, routing_key=routing_key, body=body)

    def order(
        self,
        routing_key: str = "order.placed",
        *,
        order_id: uuid.UUID,
        user_id: uuid.UUID | None = None,
        items: list[dict[str, Any]] | None = None,
        total: str = "12.50",
        reason: str = "changed my mind",
        at: datetime | None = None,
    ) -> Message:
        event_id = str(uuid.uuid4())
        data: dict[str, Any] = {"order_id": str(order_id)}
        if routing_key == "order.placed":
            data |= {
                "user_id": str(user_id),
                "items": items
                or [
                    {"sku": "BOOK-1", "quantity": 2, "unit_price": "5.00"},
                    {"sku": "PEN-7", "quantity": 1, "unit_price": "2.50"},
                ],
                "total": total,
                "currency": "EUR",
            }
        elif routing_key == "order.cancelled":
            data["reason"] = reason
        occurred_at = self._now(at)
        body = {
            "id": event_id,
            "stream_id": f"order-{order_id}",
            "type": routing_key,
            "data": data,
            "metadata": {
                "occurred_at": occurred_at.isoformat(),
                "correlation_id": uuid.uuid4().hex,
                "causation_id": str(uuid.uuid4()),
            },
            "version": 1,
            "position": 1,
            "recorded_at": occurred_at.isoformat().replace("+00:00", "Z"),
        }
        return Message(message_id=event_id, routing_key=routing_key, body=body)


@pytest.fixture
def events() -> Events:
    return Events()
