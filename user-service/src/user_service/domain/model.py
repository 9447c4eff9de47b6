"""Users, who acts on them, and the rules for both.

User          a user as stored (immutable; changes make a new User)
Actor         who asks (interchange_common.actors): a user with roles, or a trusted service
NewUser       the data to register a user
UserChanges   a partial update: None means "leave as it is"
"""

import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from zxcvbn import zxcvbn

from interchange_common.actors import ADMIN_ROLE, USER_ROLE, Actor
from interchange_common.text import has_unsafe
from user_service.domain.errors import InvalidUserData, PermissionDenied, UserNotFound

KNOWN_ROLES = frozenset({ADMIN_ROLE, USER_ROLE})
MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
# zxcvbn's scale: 0 too guessable … 4 very unguessable; 2 resists online guessing.
MIN_PASSWORD_SCORE = 2
MAX_PASSWORD_LENGTH = 128
MAX_PAGE_SIZE = 100
MAX_FILTER_LENGTH = 100

# A deliberately small check: the HTTP edge validates emails fully; gRPC callers
# and start-up code pass through here too.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class UserStatus(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    SUSPENDED = "SUSPENDED"


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    name: str
    email: str
    password_hash: str | None
    roles: tuple[str, ...]
    status: UserStatus
    created_at: datetime
    updated_at: datetime

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


@dataclass(frozen=True, slots=True)
class NewUser:
    name: str
    email: str
    password: str | None
    roles: tuple[str, ...] = (USER_ROLE,)


@dataclass(frozen=True, slots=True)
class UserChanges:
    name: str | None = None
    email: str | None = None
    roles: tuple[str, ...] | None = None
    status: UserStatus | None = None


@dataclass(frozen=True, slots=True)
class Page:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def check_text(value: str, *, what: str) -> str:
    """Text PostgreSQL and argon2 can take: no NUL character, valid Unicode (no lone surrogates)."""
    if "\x00" in value:
        raise InvalidUserData(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidUserData(f"{what} is not valid Unicode text") from e
    return value


def normalize_email(email: str) -> str:
    email = check_text(email, what="email").strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise InvalidUserData("email is not a valid address")
    return email


def normalize_name(name: str) -> str:
    name = check_text(name, what="name").strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidUserData(f"name must be 1 to {MAX_NAME_LENGTH} characters")
    if has_unsafe(name):
        # Names go into mail headers, logs and other people's screens: nothing that
        # ends a line or reorders the text around it (interchange_common.text). Joiners
        # and other format characters stay: names need them.
        raise InvalidUserData("name must not contain line breaks, control characters or bidirectional overrides")
    if all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in name):
        # Format characters alone (say, one ZERO WIDTH JOINER) show nothing: a blank name.
        raise InvalidUserData("name must contain a visible character")
    return name


ZXCVBN_MAX_LENGTH = 72


def check_password(password: str, *, email: str = "", name: str = "") -> None:
    """Long enough, and not easy to guess: zxcvbn's estimate (dictionaries of common
    passwords, names and words, keyboard walks, dates, the user's own email and
    name) must reach MIN_PASSWORD_SCORE. As NIST SP 800-63B asks: a length and a
    blocklist, no rules about which kinds of characters."""
    check_text(password, what="password")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidUserData(f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    # zxcvbn's run time grows fast with length and it refuses more than 72 characters:
    # the start of a long password is what it judges (found by the API fuzzer).
    estimate = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=[part for part in (email, name) if part])
    if estimate["score"] < MIN_PASSWORD_SCORE:
        hint = estimate["feedback"].get("warning") or "add another word or two"
        raise InvalidUserData(f"password is too easy to guess: {hint}")


def normalize_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    unknown = set(roles) - KNOWN_ROLES
    if unknown:
        raise InvalidUserData(f"unknown roles: {', '.join(sorted(unknown))}")
    return tuple(sorted(set(roles)))


def parse_user_id(raw: str) -> uuid.UUID:
    """An id from outside. A malformed id names no user: report it as not found."""
    try:
        return uuid.UUID(raw)
    except ValueError as e:
        raise UserNotFound(raw) from e


def make_page(*, page: int, limit: int) -> Page:
    """A page of a list; a limit over the cap is lowered to the cap."""
    if page < 1:
        raise InvalidUserData("page starts at 1")
    if limit < 1:
        raise InvalidUserData("limit must be at least 1")
    return Page(page=page, limit=min(limit, MAX_PAGE_SIZE))


def check_filter(contains: str) -> str:
    check_text(contains, what="filter")
    if len(contains) > MAX_FILTER_LENGTH:
        raise InvalidUserData(f"filter must be at most {MAX_FILTER_LENGTH} characters")
    return contains


def ensure_can_view(*, actor: Actor, user_id: uuid.UUID) -> None:
    """Users see themselves; admins and services see everyone. Others: not found."""
    if not actor.is_admin and (actor.user_id is None or actor.user_id != user_id):
        raise UserNotFound(str(user_id))


def ensure_admin(*, actor: Actor) -> None:
    if not actor.is_admin:
        raise PermissionDenied("admin role required")


def apply_changes(*, user: User, changes: UserChanges, actor: Actor, now: datetime) -> User:
    """The user after ``changes``, or an error when the actor may not make them."""
    ensure_can_view(actor=actor, user_id=user.id)
    if (changes.roles is not None or changes.status is not None) and not actor.is_admin:
        raise PermissionDenied("only an admin may change roles or status")
    updated = user
    if changes.name is not None:
        updated = replace(updated, name=normalize_name(changes.name))
    if changes.email is not None:
        updated = replace(updated, email=normalize_email(changes.email))
    if changes.roles is not None:
        updated = replace(updated, roles=normalize_roles(changes.roles))
    if changes.status is not None:
        updated = replace(updated, status=changes.status)
    if updated == user:
        return user
    return replace(updated, updated_at=now)
