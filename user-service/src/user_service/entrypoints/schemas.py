"""The HTTP shapes of users (docs/api.md): what comes in, what goes out."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from user_service.domain.model import (
    MAX_EMAIL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    User,
)

RoleName = Literal["admin", "user"]
StatusName = Literal["ACTIVE", "INACTIVE", "SUSPENDED"]
# The rule is the domain's (normalize_name), which answers 422 with the reason; a JSON
# schema pattern could not say it in every client's regular-expression dialect.
NAME_RULE = (
    "Any text but line breaks, control characters, noncharacters and the bidirectional"
    " embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069);"
    " joiners such as U+200C and U+200D are welcome."
)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, description=NAME_RULE)
    email: EmailStr = Field(max_length=MAX_EMAIL_LENGTH)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)


class UserUpdate(BaseModel):
    """A partial update: fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH, description=NAME_RULE)
    email: EmailStr | None = Field(default=None, max_length=MAX_EMAIL_LENGTH)
    roles: list[RoleName] | None = Field(default=None, max_length=len(("admin", "user")))
    status: StatusName | None = None


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=1, max_length=MAX_EMAIL_LENGTH)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  # the OAuth 2 token type
    expires_in: int


class UserPublic(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    roles: list[str]
    status: StatusName
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> "UserPublic":
        return cls(
            id=user.id,
            name=user.name,
            email=user.email,
            roles=list(user.roles),
            status=user.status.value,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class UserList(BaseModel):
    items: list[UserPublic]
    total: int
    page: int
    limit: int


class RevocationPublic(BaseModel):
    """The user's access tokens issued at or before ``revoked_at`` are refused."""

    user_id: uuid.UUID
    revoked_at: datetime


class RevocationList(BaseModel):
    """Every live revocation mark asked for; ``as_of``: when they were read (ask next
    for those since a little before it)."""

    items: list[RevocationPublic]
    as_of: datetime
