"""Fakes for user-service's ports: an in-memory repository, a cheap hasher, plain tokens."""

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from user_service.domain.errors import EmailTaken, UserNotFound
from user_service.domain.events import Change, TokenRevocation, UserEvent, revocation_of
from user_service.domain.model import Page, User, UserStatus
from user_service.domain.usecases import Users


class FakeRepository:
    """Users in a dict; ``events`` holds what each kept change gave to store, in order
    (a refused change stores neither the user nor its event, as one transaction), and
    ``marks`` the revocation mark each user's changes left (the latest)."""

    def __init__(self) -> None:
        self.users: dict[uuid.UUID, User] = {}
        self.events: list[UserEvent] = []
        self.marks: dict[uuid.UUID, datetime] = {}

    def _store(self, event: UserEvent) -> None:
        self.events.append(event)
        mark = revocation_of(event)
        if mark is not None:
            self.marks[mark.user_id] = max(self.marks.get(mark.user_id, mark.revoked_at), mark.revoked_at)

    async def add(self, *, user: User, event: UserEvent) -> None:
        if any(existing.email == user.email for existing in self.users.values()):
            raise EmailTaken(user.email)
        self.users[user.id] = user
        self._store(event)

    async def get(self, *, user_id: uuid.UUID) -> User:
        if user_id not in self.users:
            raise UserNotFound(str(user_id))
        return self.users[user_id]

    async def get_by_email(self, *, email: str) -> User | None:
        return next((user for user in self.users.values() if user.email == email), None)

    async def update(self, *, user_id: uuid.UUID, change: Callable[[User], Change | None]) -> User:
        changed = change(await self.get(user_id=user_id))
        if changed is None:
            return self.users[user_id]
        if any(other.email == changed.user.email and other.id != user_id for other in self.users.values()):
            raise EmailTaken(changed.user.email)
        self.users[user_id] = changed.user
        self._store(changed.event)
        return changed.user

    async def delete(self, *, user_id: uuid.UUID, event: UserEvent) -> None:
        await self.get(user_id=user_id)
        del self.users[user_id]
        self._store(event)

    async def list(self, *, page: Page, contains: str) -> tuple[list[User], int]:
        matching = [
            user
            for user in sorted(self.users.values(), key=lambda u: (u.created_at, u.id))
            if contains.lower() in user.name.lower() or contains.lower() in user.email
        ]
        return matching[page.offset : page.offset + page.limit], len(matching)

    async def stream(self, *, contains: str) -> AsyncIterator[User]:
        found, _ = await self.list(page=Page(page=1, limit=10**9), contains=contains)
        for user in found:
            yield user

    async def revocations(self, *, since: datetime) -> Sequence[TokenRevocation]:
        return [TokenRevocation(user_id, at) for user_id, at in self.marks.items() if at >= since]


class FakeHasher:
    async def hash(self, *, password: str) -> str:
        return f"hashed:{password}"

    async def verify(self, *, password_hash: str, password: str) -> bool:
        return password_hash == f"hashed:{password}"


class FakeTokens:
    def issue(self, *, user: User) -> tuple[str, int]:
        return f"token-for-{user.id}", 900


class TickingClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class CountingCorrelation:
    """Correlation ids "c1", "c2", … one per call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"c{self.calls}"


@pytest.fixture
def repository() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def users(repository: FakeRepository, clock: TickingClock) -> Users:
    return Users(
        repository=repository,
        hasher=FakeHasher(),
        tokens=FakeTokens(),
        clock=clock,
        correlation_id=CountingCorrelation(),
    )


MakeUser = Callable[..., User]


@pytest.fixture
def make_user() -> MakeUser:
    def make(**fields: Any) -> User:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        base = User(
            id=uuid.uuid4(),
            name="Ada",
            email=f"ada-{uuid.uuid4().hex[:6]}@example.com",
            password_hash=None,
            roles=("user",),
            status=UserStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        return replace(base, **fields)

    return make
