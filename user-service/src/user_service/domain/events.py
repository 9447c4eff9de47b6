"""What user-service tells the world about users: user.created, user.updated,
user.deleted. Past tense, with their own id, the time, and the correlation id of
the request that caused them. Never the password hash.

The use cases decide which event a change records (``change_of`` for updates) and
hand it to the repository, which stores it with the change in one transaction, and
with it the revocation mark the change leaves, if any (``revocation_of``): the user's
tokens issued until then stop working. The gateway refuses them from the event at
once; the marks user-service keeps are what it restores them from when Redis lost them.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from interchange_common.accesstokens import MAX_ACCESS_TOKEN_TTL_SECONDS
from user_service.domain.model import User, UserStatus

# A mark refuses tokens issued before it; once the longest-lived of them has expired
# it refuses nothing and may go.
REVOCATION_LIFETIME = timedelta(seconds=MAX_ACCESS_TOKEN_TTL_SECONDS)


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


@dataclass(frozen=True, slots=True)
class TokenRevocation:
    """The user's access tokens issued at or before ``revoked_at`` are refused."""

    user_id: uuid.UUID
    revoked_at: datetime


def revocation_of(event: UserEvent) -> TokenRevocation | None:
    """The mark a change leaves: the user is deleted, is no longer active, or their
    roles changed (tokens carry roles: a demoted admin's must not stay an admin's).
    None for any other change. The gateway applies the same rule to the published
    event (gateway.domain.model.revoked_at), at the event's time."""
    revokes = event.type == "user.deleted" or (
        event.type == "user.updated"
        and event.user is not None
        and (event.user.status is not UserStatus.ACTIVE or "roles" in event.changed)
    )
    return TokenRevocation(user_id=event.user_id, revoked_at=event.occurred_at) if revokes else None
