"""Fakes for user-service's ports: an in-memory repository, a cheap hasher, plain tokens."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from user_service.domain.errors import EmailTaken, UserNotFound
from user_service.domain.model import Page, User, UserStatus
from user_service.domain.usecases import Users


class FakeRepository:
    def __init__(self) -> None:
        self.users: dict[uuid.UUID, User] = {}

    async def add(self, *, user):
        if any(existing.email == user.email for existing in self.users.values()):
            raise EmailTaken(user.email)
        self.users[user.id] = user

    async def get(self, *, user_id):
        if user_id not in self.users:
            raise UserNotFound(str(user_id))
        return self.users[user_id]

    async def get_by_email(self, *, email):
        return next((user for user in self.users.values() if user.email == email), None)

    async def update(self, *, user_id, change):
        changed = change(await self.get(user_id=user_id))
        if any(other.email == changed.email and other.id != user_id for other in self.users.values()):
            raise EmailTaken(changed.email)
        self.users[user_id] = changed
        return changed

    async def delete(self, *, user_id):
        await self.get(user_id=user_id)
        del self.users[user_id]

    async def list(self, *, page: Page, contains):
        matching = [
            user
            for user in sorted(self.users.values(), key=lambda u: (u.created_at, u.id))
            if contains.lower() in user.name.lower() or contains.lower() in user.email
        ]
        return matching[page.offset : page.offset + page.limit], len(matching)

    async def stream(self, *, contains):
        found, _ = await self.list(page=Page(page=1, limit=10**9), contains=contains)
        for user in found:
            yield user


class FakeHasher:
    async def hash(self, *, password):
        return f"hashed:{password}"

    async def verify(self, *, password_hash, password):
        return password_hash == f"hashed:{password}"


class FakeTokens:
    def issue(self, *, user):
        return f"token-for-{user.id}", 900


class TickingClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def repository():
    return FakeRepository()


@pytest.fixture
def users(repository):
    return Users(repository=repository, hasher=FakeHasher(), tokens=FakeTokens(), clock=TickingClock())


@pytest.fixture
def make_user():
    def make(**fields):
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
