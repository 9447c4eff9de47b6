"""On whose behalf a service is called.

The gateway verifies the end user's access token and calls a service with its own
service token plus two headers naming the user: ``X-Actor-Id`` and ``X-Actor-Roles``
(comma-separated). Services trust those headers only from a verified service token.

    Actor             who asks: a signed-in user with roles, a service acting for
                      itself, or nobody in particular (an anonymous public call)
    actor_dependency  the FastAPI dependency that turns the headers into an Actor
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.exceptions import HTTPException

from interchange_common.servicejwt import ServiceCaller

ACTOR_ID_HEADER = "x-actor-id"
ACTOR_ROLES_HEADER = "x-actor-roles"
ADMIN_ROLE = "admin"
USER_ROLE = "user"
# Callers that forward end users: without actor headers they act for nobody, never
# as a trusted service (a public route must not run with a service's rights).
USER_FACING_CALLERS = frozenset({"gateway"})


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


def parse_actor(*, raw_id: str, roles: str) -> Actor:
    """The actor the headers name; 400 when the id is not a user id (a caller's bug)."""
    try:
        user_id = uuid.UUID(raw_id)
    except ValueError as e:
        raise HTTPException(status_code=400, detail="X-Actor-Id is not a user id") from e
    return Actor(user_id=user_id, roles=frozenset(role for role in roles.split(",") if role))


def actor_dependency(
    *, require_service: Callable[[Request], Awaitable[ServiceCaller]]
) -> Callable[[Request], Awaitable[Actor]]:
    """A dependency: the verified calling service's actor (401 without a service token)."""

    async def actor_of(request: Request) -> Actor:
        caller = await require_service(request)
        raw_id = request.headers.get(ACTOR_ID_HEADER)
        if raw_id is None:
            return Actor.anonymous() if caller.service in USER_FACING_CALLERS else Actor.trusted_service()
        return parse_actor(raw_id=raw_id, roles=request.headers.get(ACTOR_ROLES_HEADER, ""))

    return actor_of
