"""On whose behalf a service is called.

The gateway verifies the end user's access token and calls a service with its own
service token plus two headers naming the user: ``X-Actor-Id`` and ``X-Actor-Roles``
(comma-separated). Services trust those headers only from a verified service token.

``Actor`` is who asks: a signed-in user with roles, a service acting for itself, or
nobody in particular (an anonymous public call). It is plain data, for the services'
pure domains; ``interchange_common.httpauth.actor_dependency`` reads it from a request.
"""

import uuid
from dataclasses import dataclass

ACTOR_ID_HEADER = "x-actor-id"
ACTOR_ROLES_HEADER = "x-actor-roles"
# On live connections (SSE, WebSocket): when the user's access token expires, in whole
# seconds since the epoch. The service ends the connection then.
ACTOR_EXPIRES_HEADER = "x-actor-expires"
# And when it was issued (its iat, whole seconds): a revocation of the user ends the
# connections opened with tokens issued at or before it.
ACTOR_ISSUED_AT_HEADER = "x-actor-issued-at"
ADMIN_ROLE = "admin"
USER_ROLE = "user"


def parse_roles(header: str) -> frozenset[str]:
    """The roles of an X-Actor-Roles header (comma-separated names)."""
    return frozenset(role for role in header.split(",") if role)


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: uuid.UUID | None
    roles: frozenset[str] = frozenset()
    service: bool = False

    @property
    def is_admin(self) -> bool:
        return self.service or ADMIN_ROLE in self.roles

    def may_see(self, *, owner: uuid.UUID) -> bool:
        """Object-level access: the owner, an admin or a trusted service."""
        return self.is_admin or (self.user_id is not None and self.user_id == owner)

    @classmethod
    def trusted_service(cls) -> "Actor":
        return cls(user_id=None, service=True)

    @classmethod
    def anonymous(cls) -> "Actor":
        return cls(user_id=None)


@dataclass(frozen=True, slots=True)
class SignedInUser:
    """A user whose access token was verified, until the token expires."""

    user_id: uuid.UUID
    roles: frozenset[str]
    expires_at: float  # seconds since the epoch
    issued_at: float = 0.0  # the token's iat, seconds since the epoch

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, roles=self.roles)
