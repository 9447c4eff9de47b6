"""What user-service does, written against the ports: each entry point calls these."""

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from interchange_common.actors import ADMIN_ROLE, USER_ROLE, Actor
from interchange_common.requestctx import outgoing_request_id
from user_service.domain.errors import EmailTaken, InvalidCredentials, UserNotFound
from user_service.domain.events import (
    REVOCATION_LIFETIME,
    Change,
    TokenRevocation,
    change_of,
    user_created,
    user_deleted,
)
from user_service.domain.model import (
    NewUser,
    Page,
    User,
    UserChanges,
    UserStatus,
    apply_changes,
    check_filter,
    check_password,
    check_text,
    ensure_admin,
    ensure_can_view,
    make_page,
    normalize_email,
    normalize_name,
    normalize_roles,
)
from user_service.domain.ports import AccessTokenIssuer, PasswordHasher, UserRepository


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Revocations:
    """Live revocation marks, and the time they were asked for (``as_of``): a caller
    that keeps up asks next for those since a little before it."""

    marks: Sequence[TokenRevocation]
    as_of: datetime


class Users:
    """The use cases of user-service."""

    def __init__(
        self,
        *,
        repository: UserRepository,
        hasher: PasswordHasher,
        tokens: AccessTokenIssuer,
        clock: Callable[[], datetime] = _utcnow,
        correlation_id: Callable[[], str] = outgoing_request_id,
    ) -> None:
        self._repository = repository
        self._hasher = hasher
        self._tokens = tokens
        self._clock = clock
        # The id events carry: the request's, or a fresh one for work no request started.
        self._correlation_id = correlation_id

    async def register(self, *, new_user: NewUser) -> User:
        email = normalize_email(new_user.email)
        name = normalize_name(new_user.name)
        roles = normalize_roles(new_user.roles)
        password_hash = None
        if new_user.password is not None:
            check_password(new_user.password, email=email, name=name)
            password_hash = await self._hasher.hash(password=new_user.password)
        now = self._clock()
        user = User(
            id=uuid.uuid4(),
            name=name,
            email=email,
            password_hash=password_hash,
            roles=roles,
            status=UserStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        await self._repository.add(
            user=user, event=user_created(user=user, correlation_id=self._correlation_id(), at=now)
        )
        return user

    async def issue_token(self, *, email: str, password: str) -> IssuedToken:
        """A token for an active user whose password matches; InvalidCredentials otherwise."""
        check_text(password, what="password")
        user = await self._repository.get_by_email(email=check_text(email, what="email").strip().lower())
        if user is None or user.password_hash is None:
            # Spend the same time as a real check, so timing does not reveal which emails exist.
            await self._hasher.verify(password_hash=_DECOY_HASH, password=password)
            raise InvalidCredentials("email or password is wrong")
        if not await self._hasher.verify(password_hash=user.password_hash, password=password):
            raise InvalidCredentials("email or password is wrong")
        if user.status is not UserStatus.ACTIVE:
            raise InvalidCredentials("the account is not active")
        token, expires_in = self._tokens.issue(user=user)
        return IssuedToken(access_token=token, expires_in=expires_in)

    async def get(self, *, actor: Actor, user_id: uuid.UUID) -> User:
        ensure_can_view(actor=actor, user_id=user_id)
        return await self._repository.get(user_id=user_id)

    async def list(self, *, actor: Actor, page: int, limit: int, contains: str) -> tuple[list[User], int, Page]:
        """One page of users (admins and services only), the total, and the page served."""
        ensure_admin(actor=actor)
        served = make_page(page=page, limit=limit)
        found, total = await self._repository.list(page=served, contains=check_filter(contains))
        return found, total, served

    def stream(self, *, actor: Actor, contains: str) -> AsyncIterator[User]:
        ensure_admin(actor=actor)
        return self._repository.stream(contains=check_filter(contains))

    async def update(self, *, actor: Actor, user_id: uuid.UUID, changes: UserChanges) -> User:
        ensure_can_view(actor=actor, user_id=user_id)
        now, correlation_id = self._clock(), self._correlation_id()

        def change(user: User) -> Change | None:
            after = apply_changes(user=user, changes=changes, actor=actor, now=now)
            return change_of(before=user, after=after, correlation_id=correlation_id, at=now)

        return await self._repository.update(user_id=user_id, change=change)

    async def delete(self, *, actor: Actor, user_id: uuid.UUID) -> None:
        ensure_can_view(actor=actor, user_id=user_id)
        event = user_deleted(user_id=user_id, correlation_id=self._correlation_id(), at=self._clock())
        await self._repository.delete(user_id=user_id, event=event)

    async def revocations(self, *, since: datetime | None) -> Revocations:
        """The marks that still refuse a token (younger than the longest token
        lifetime), all of them or those of ``since`` or later. Services only: the
        entry point admits nobody else."""
        now = self._clock()
        live_from = now - REVOCATION_LIFETIME
        marks = await self._repository.revocations(since=live_from if since is None else max(since, live_from))
        return Revocations(marks=marks, as_of=now)

    async def ensure_admin_account(self, *, email: str, password: str) -> User:
        """The admin account from the settings: created when missing, left alone when present."""
        existing = await self._repository.get_by_email(email=normalize_email(email))
        if existing is not None:
            return existing
        try:
            return await self.register(
                new_user=NewUser(name="Administrator", email=email, password=password, roles=(ADMIN_ROLE, USER_ROLE))
            )
        except EmailTaken:
            # Another instance created it at the same moment.
            existing = await self._repository.get_by_email(email=normalize_email(email))
            if existing is None:
                raise UserNotFound(email) from None
            return existing


# An argon2id hash of a random string nobody knows; verified against when the email is unknown.
_DECOY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$Q+HBT0V8ePB6sYCa1g1UqA$4Q/nbP6VjKj5IJ0l70LiuOu8WQPE/SkZheh9OYDqm5c"
