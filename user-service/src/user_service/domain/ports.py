"""What the domain needs from the outside world, as protocols the adapters satisfy."""

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Protocol

from user_service.domain.events import Change, TokenRevocation, UserEvent
from user_service.domain.model import Page, User


class UserRepository(Protocol):
    """Each write stores the event it is given in the same transaction as the change
    (a transactional outbox): the event is told if and only if the change is kept.
    So is the revocation mark the event's change leaves (events.revocation_of)."""

    async def add(self, *, user: User, event: UserEvent) -> None:
        """Store a new user and its event; EmailTaken when the email is in use."""

    async def get(self, *, user_id: uuid.UUID) -> User:
        """The user, or UserNotFound."""

    async def get_by_email(self, *, email: str) -> User | None: ...

    async def update(self, *, user_id: uuid.UUID, change: Callable[[User], Change | None]) -> User:
        """Apply ``change`` to the stored user atomically (no lost updates), store the
        user and the event it returns, and return the user; None: the stored user stays."""

    async def delete(self, *, user_id: uuid.UUID, event: UserEvent) -> None:
        """Remove the user and store its event, or UserNotFound."""

    async def list(self, *, page: Page, contains: str) -> tuple[list[User], int]:
        """One page of users whose name or email contains the text, and the total."""

    def stream(self, *, contains: str) -> AsyncIterator[User]:
        """Every matching user, oldest first, a page at a time (never all in memory)."""

    async def revocations(self, *, since: datetime) -> Sequence[TokenRevocation]:
        """The revocation marks (stored with the changes that left them: see
        events.revocation_of) of ``since`` or later, one per user, the latest."""


class PasswordHasher(Protocol):
    async def hash(self, *, password: str) -> str: ...

    async def verify(self, *, password_hash: str, password: str) -> bool: ...


class AccessTokenIssuer(Protocol):
    def issue(self, *, user: User) -> tuple[str, int]:
        """A signed access token for the user and its lifetime in seconds."""
