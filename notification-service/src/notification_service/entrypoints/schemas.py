"""The HTTP shapes of notifications and dead letters: what goes out."""

import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from notification_service.domain.model import DeadLetter, Notification


class NotificationPublic(BaseModel):
    id: uuid.UUID
    type: str
    title: str
    body: str
    data: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, notification: Notification) -> "NotificationPublic":
        return cls(
            id=notification.id,
            type=notification.type,
            title=notification.title,
            body=notification.body,
            data=notification.data,
            created_at=notification.created_at,
        )


class NotificationList(BaseModel):
    items: list[NotificationPublic]
    total: int
    page: int
    limit: int


def _readable(body: bytes) -> Any:
    """The message body as JSON when it is JSON, else as text."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", errors="replace")


class DeadLetterPublic(BaseModel):
    id: uuid.UUID
    message_id: str
    routing_key: str
    error: str
    attempts: int
    failed_at: list[datetime]
    dead_at: datetime
    stored_at: datetime
    body: Any

    @classmethod
    def of(cls, dead_letter: DeadLetter) -> "DeadLetterPublic":
        return cls(
            id=dead_letter.id,
            message_id=dead_letter.message_id,
            routing_key=dead_letter.routing_key,
            error=dead_letter.error,
            attempts=dead_letter.attempts,
            failed_at=list(dead_letter.failed_at),
            dead_at=dead_letter.dead_at,
            stored_at=dead_letter.stored_at,
            body=_readable(dead_letter.body),
        )


class DeadLetterList(BaseModel):
    items: list[DeadLetterPublic]
    total: int
    page: int
    limit: int


class ReplayResult(BaseModel):
    id: uuid.UUID
    message_id: str
    replayed: bool = True
