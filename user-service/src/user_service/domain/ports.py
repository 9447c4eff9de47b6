"""What the domain needs from the outside world, as protocols the adapters satisfy."""

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from user_service.domain.model import Page, User


class UserRepository(Protocol):
    async def add(self, *, user: User) -> None:
        """Store a new user; EmailTaken when the email is in use."""

    async def get(self, *, user_id: uuid.UUID) -> User:
        """The user, or UserNotFound."""

    async def get_by_email(self, *, email: str) -> User | None: ...

    async def update(self, *, user_id: uuid.UUID, change: Callable[[User], User]) -> User:
        """Apply ``change`` to the stored user atomically (no lost updates) and store the result."""

    async def delete(self, *, user_id: uuid.UUID) -> None:
        """Remove the user, or UserNotFound."""

    async def list(self, *, page: Page, contains: str) -> tuple[list[User], int]:
        """One page of users whose name or email contains the text, and the total."""

    def stream(self, *, contains: str) -> AsyncIterator[User]:
        """Every matching user, oldest first, a page at a time (never all in memory)."""


class PasswordHasher(Protocol):
    async def hash(self, *, password: str) -> str: ...

    async def verify(self, *, password_hash: str, password: str) -> bool: ...


class AccessTokenIssuer(Protocol):
    def issue(self, *, user: User) -> tuple[str, int]:
        """A signed access token for the user and its lifetime in seconds."""
