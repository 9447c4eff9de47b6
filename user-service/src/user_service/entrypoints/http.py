"""user-service's HTTP API on port 8001.

Public: /health, /health/live, /metrics, /.well-known/jwks.json.
Internal (/internal/…): a service token is required. The gateway also says on whose
behalf it calls (X-Actor-Id, X-Actor-Roles); without those headers the calling
service acts for itself and may read every user. /internal/revocations (the live
revocation marks, which the gateway restores Redis from) answers the service token
alone: no route of the gateway's leads there.
"""

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import AwareDatetime
from starlette.responses import Response

from interchange_common.actors import Actor
from interchange_common.asgi import ObservabilityMiddleware
from interchange_common.health import HealthCheck, health_router
from interchange_common.httpauth import actor_dependency, service_caller_dependency
from interchange_common.metrics import metrics_router
from interchange_common.problems import install_problem_handlers, problem_handler
from interchange_common.servicejwt import ServiceTokenVerifier
from user_service.adapters.errors import UserStoreError
from user_service.domain.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidUserData,
    PermissionDenied,
    UserNotFound,
    UserServiceError,
)
from user_service.domain.model import (
    MAX_FILTER_LENGTH,
    MAX_PAGE_SIZE,
    NewUser,
    UserChanges,
    UserStatus,
    parse_user_id,
)
from user_service.domain.usecases import Users
from user_service.entrypoints.schemas import (
    RevocationList,
    RevocationPublic,
    TokenRequest,
    TokenResponse,
    UserCreate,
    UserList,
    UserPublic,
    UserUpdate,
)

_STATUS_OF: dict[type[Exception], int] = {
    UserNotFound: 404,
    EmailTaken: 409,
    InvalidUserData: 422,
    PermissionDenied: 403,
    InvalidCredentials: 401,
}
_DETAIL_OF: dict[type[Exception], str] = {
    UserNotFound: "user not found",
    EmailTaken: "a user with this email already exists",
}


def create_http_app(
    *,
    users: Users,
    verifier: ServiceTokenVerifier,
    jwks: Callable[[], dict[str, Any]],
    health_checks: Callable[[], Sequence[HealthCheck]],
    max_body_bytes: int,
) -> FastAPI:
    app = FastAPI(title="user-service", version="1.0.0", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    app.add_exception_handler(UserServiceError, problem_handler(statuses=_STATUS_OF, details=_DETAIL_OF))
    app.add_exception_handler(
        UserStoreError,
        problem_handler(statuses={UserStoreError: 503}, details={UserStoreError: "the user store is unavailable"}),
    )
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=max_body_bytes)
    app.include_router(health_router(checks=health_checks))
    app.include_router(metrics_router())

    @app.get("/.well-known/jwks.json", tags=["auth"], summary="Public keys that verify access tokens")
    async def get_jwks() -> dict[str, Any]:
        return jwks()

    require_service = service_caller_dependency(verifier=verifier)
    internal = APIRouter(prefix="/internal", dependencies=[Depends(require_service)])
    ActorDep = Annotated[Actor, Depends(actor_dependency(require_service=require_service))]

    @internal.post("/users", status_code=201, response_model=UserPublic, tags=["users"])
    async def create_user(body: UserCreate) -> UserPublic:
        user = await users.register(new_user=NewUser(name=body.name, email=body.email, password=body.password))
        return UserPublic.of(user)

    @internal.post("/auth/token", response_model=TokenResponse, tags=["auth"])
    async def issue_token(body: TokenRequest) -> TokenResponse:
        issued = await users.issue_token(email=body.email, password=body.password)
        return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)

    @internal.get("/users", response_model=UserList, tags=["users"])
    async def list_users(
        actor: ActorDep,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        limit: Annotated[int, Query(ge=1, le=1_000_000, description=f"capped at {MAX_PAGE_SIZE}")] = 10,
        filter: Annotated[str, Query(max_length=MAX_FILTER_LENGTH)] = "",  # noqa: A002  # the public query name
    ) -> UserList:
        found, total, served = await users.list(actor=actor, page=page, limit=limit, contains=filter)
        return UserList(
            items=[UserPublic.of(user) for user in found], total=total, page=served.page, limit=served.limit
        )

    @internal.get("/users/{user_id}", response_model=UserPublic, tags=["users"])
    async def get_user(user_id: str, actor: ActorDep) -> UserPublic:
        return UserPublic.of(await users.get(actor=actor, user_id=parse_user_id(user_id)))

    @internal.patch("/users/{user_id}", response_model=UserPublic, tags=["users"])
    async def update_user(user_id: str, body: UserUpdate, actor: ActorDep) -> UserPublic:
        changes = UserChanges(
            name=body.name,
            email=body.email,
            roles=None if body.roles is None else tuple(body.roles),
            status=None if body.status is None else UserStatus(body.status),
        )
        return UserPublic.of(await users.update(actor=actor, user_id=parse_user_id(user_id), changes=changes))

    @internal.delete("/users/{user_id}", status_code=204, tags=["users"])
    async def delete_user(user_id: str, actor: ActorDep) -> Response:
        await users.delete(actor=actor, user_id=parse_user_id(user_id))
        return Response(status_code=204)

    @internal.get("/revocations", tags=["auth"], response_model=RevocationList)
    async def list_revocations(
        since: Annotated[AwareDatetime | None, Query(description="only the marks of this time or later")] = None,
    ) -> Response:
        """The revocation marks that still refuse a token, one per user (the latest):
        what the gateway writes back into Redis when Redis has lost them."""
        found = await users.revocations(since=since)
        listed = RevocationList(
            items=[RevocationPublic(user_id=mark.user_id, revoked_at=mark.revoked_at) for mark in found.marks],
            as_of=found.as_of,
        )
        # Thousands of marks after a wave of suspensions: serialized once here, not
        # validated a second time against the response model on the way out.
        return Response(content=listed.model_dump_json(), media_type="application/json")

    app.include_router(internal)
    return app
