"""FastAPI dependencies for internal routes: the calling service (its token checked,
401 problems otherwise) and the actor it calls for (interchange_common.actors)."""

import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

from interchange_common.actors import ACTOR_ID_HEADER, ACTOR_ROLES_HEADER, Actor, parse_roles
from interchange_common.errors import ServiceAuthError
from interchange_common.servicejwt import ServiceCaller, ServiceTokenVerifier


def service_caller_dependency(
    *, verifier: ServiceTokenVerifier
) -> Callable[[Request], Coroutine[Any, Any, ServiceCaller]]:
    """A dependency that returns the calling service, or refuses the request with 401.

    It is ``async`` although it never awaits: FastAPI runs plain ``def`` dependencies
    in a thread pool, and a thread hop per request costs more than the check itself.
    """

    async def require_service(request: Request) -> ServiceCaller:
        try:
            return verifier.verify_authorization(header=request.headers.get("authorization"))
        except ServiceAuthError as e:
            raise HTTPException(status_code=401, detail=str(e), headers={"WWW-Authenticate": "Bearer"}) from e

    return require_service


# Callers that forward end users: without actor headers they act for nobody, never
# as a trusted service (a public route must not run with a service's rights).
USER_FACING_CALLERS = frozenset({"gateway"})


def parse_actor(*, raw_id: str, roles: str) -> Actor:
    """The actor the headers name; 400 when the id is not a user id (a caller's bug)."""
    try:
        user_id = uuid.UUID(raw_id)
    except ValueError as e:
        raise HTTPException(status_code=400, detail="X-Actor-Id is not a user id") from e
    return Actor(user_id=user_id, roles=parse_roles(roles))


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
