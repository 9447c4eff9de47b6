"""What user-service tells the world about users: user.created, user.updated,
user.deleted. Past tense, with their own id, the time, and the correlation id of
the request that caused them. Never the password hash.

The use cases decide which event a change records (``change_of`` for updates) and
hand it to the repository, which stores it with the change in one transaction.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from user_service.domain.model import User


@dataclass(frozen=True, slots=True)
class UserEvent:
    id: uuid.UUID
    type: str  # also the routing key
    user_id: uuid.UUID
    occurred_at: datetime
    correlation_id: str
    user: User | None  # None for user.deleted
    changed: tuple[str, ...] = ()  # user.updated: the fields that changed

    def as_message(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": str(self.user_id)}
        if self.user is not None:
            data |= {
                "name": self.user.name,
                "email": self.user.email,
                "roles": list(self.user.roles),
                "status": self.user.status.value,
            }
        if self.type == "user.updated":
            data["changed"] = list(self.changed)
        return {
            "id": str(self.id),
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "correlation_id": self.correlation_id,
            "data": data,
        }


def user_created(*, user: User, correlation_id: str, at: datetime) -> UserEvent:
    return UserEvent(uuid.uuid4(), "user.created", user.id, at, correlation_id, user)


# What a user.updated event names as changed (never the password hash).
_PUBLISHED_FIELDS = ("name", "email", "roles", "status")


def user_updated(*, before: User, user: User, correlation_id: str, at: datetime) -> UserEvent:
    changed = tuple(name for name in _PUBLISHED_FIELDS if getattr(before, name) != getattr(user, name))
    return UserEvent(uuid.uuid4(), "user.updated", user.id, at, correlation_id, user, changed)


def user_deleted(*, user_id: uuid.UUID, correlation_id: str, at: datetime) -> UserEvent:
    return UserEvent(uuid.uuid4(), "user.deleted", user_id, at, correlation_id, None)


@dataclass(frozen=True, slots=True)
class Change:
    """A user as an update left it, and the event that tells of the update."""

    user: User
    event: UserEvent


def change_of(*, before: User, after: User, correlation_id: str, at: datetime) -> Change | None:
    """What an update records: ``after`` with a user.updated naming the published
    fields that differ; None when the user is as it was (nothing stored, nothing told)."""
    if after == before:
        return None
    return Change(user=after, event=user_updated(before=before, user=after, correlation_id=correlation_id, at=at))
