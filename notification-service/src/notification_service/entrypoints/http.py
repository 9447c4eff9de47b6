"""notification-service's HTTP API on port 8003.

Public: /health, /health/live, /metrics.
Internal (/internal/…): a service token is required, and the gateway says on whose
behalf it calls (X-Actor-Id, X-Actor-Roles; see interchange_common.actors).

    GET    /internal/notifications                        the actor's own, newest first
    GET    /internal/admin/dead-letters                   admin: messages that exhausted their retries
    POST   /internal/admin/dead-letters/{id}/replay       admin: back to the queue, then forgotten
    DELETE /internal/admin/dead-letters/{id}              admin: discard
    GET    /internal/events, /internal/ws                 live push (entrypoints.sse_websocket)
"""

from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.responses import Response

from interchange_common.actors import Actor
from interchange_common.asgi import ObservabilityMiddleware
from interchange_common.health import HealthCheck, health_router
from interchange_common.httpauth import actor_dependency, service_caller_dependency
from interchange_common.metrics import metrics_router
from interchange_common.problems import install_problem_handlers, problem_handler, problem_response
from interchange_common.servicejwt import ServiceTokenVerifier
from notification_service.adapters.errors import LiveUnavailable, NotificationStoreError, ReplayFailed
from notification_service.domain.errors import (
    DeadLetterNotFound,
    InvalidRequest,
    InvalidStreamId,
    NotificationServiceError,
    NotSignedIn,
    PermissionDenied,
    TooManyStreams,
)
from notification_service.domain.model import MAX_PAGE_SIZE
from notification_service.domain.ports import LiveFanout, RevocationWatch
from notification_service.domain.usecases import DeadLetters, Notifications
from notification_service.entrypoints.schemas import (
    DeadLetterList,
    DeadLetterPublic,
    NotificationList,
    NotificationPublic,
    ReplayResult,
)
from notification_service.entrypoints.sse_websocket import LiveLimits, live_router

_STATUS_OF: dict[type[Exception], int] = {
    NotSignedIn: 401,
    PermissionDenied: 403,
    DeadLetterNotFound: 404,
    InvalidRequest: 422,
    InvalidStreamId: 422,
    NotificationStoreError: 503,
    ReplayFailed: 503,
    LiveUnavailable: 503,
}
_DETAIL_OF: dict[type[Exception], str] = {
    DeadLetterNotFound: "dead letter not found",
    NotificationStoreError: "the notification store is unavailable",
    ReplayFailed: "the message broker did not take the message; the dead letter is kept",
    LiveUnavailable: "live push is unavailable right now",
}


async def _too_many_streams(_: Request, exc: Exception) -> Response:
    """The stream cap's 429: when to come back, and the cap itself in RateLimit-*."""
    assert isinstance(exc, TooManyStreams)
    wait = str(exc.retry_after_seconds)
    headers = {
        "Retry-After": wait,
        "RateLimit-Limit": str(exc.limit),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": wait,
    }
    return problem_response(status=429, detail=str(exc), headers=headers)


PageQuery = Annotated[int, Query(ge=1, le=1_000_000)]
LimitQuery = Annotated[int, Query(ge=1, le=1_000_000, description=f"capped at {MAX_PAGE_SIZE}")]


def create_http_app(
    *,
    notifications: Notifications,
    dead_letters: DeadLetters,
    verifier: ServiceTokenVerifier,
    health_checks: Callable[[], Sequence[HealthCheck]],
    max_body_bytes: int,
    hub: LiveFanout,
    revocations: RevocationWatch,
    live_limits: LiveLimits,
) -> FastAPI:
    app = FastAPI(title="notification-service", version="1.0.0", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    app.add_exception_handler(NotificationServiceError, problem_handler(statuses=_STATUS_OF, details=_DETAIL_OF))
    app.add_exception_handler(TooManyStreams, _too_many_streams)
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=max_body_bytes)
    app.include_router(health_router(checks=health_checks))
    app.include_router(metrics_router())

    require_service = service_caller_dependency(verifier=verifier)
    internal = APIRouter(prefix="/internal", dependencies=[Depends(require_service)])
    ActorDep = Annotated[Actor, Depends(actor_dependency(require_service=require_service))]

    @internal.get("/notifications", response_model=NotificationList, tags=["notifications"])
    async def list_notifications(actor: ActorDep, page: PageQuery = 1, limit: LimitQuery = 10) -> NotificationList:
        found, total, served = await notifications.list(actor=actor, page=page, limit=limit)
        return NotificationList(
            items=[NotificationPublic.of(item) for item in found], total=total, page=served.page, limit=served.limit
        )

    @internal.get("/admin/dead-letters", response_model=DeadLetterList, tags=["dead letters"])
    async def list_dead_letters(actor: ActorDep, page: PageQuery = 1, limit: LimitQuery = 10) -> DeadLetterList:
        found, total, served = await dead_letters.list(actor=actor, page=page, limit=limit)
        return DeadLetterList(
            items=[DeadLetterPublic.of(item) for item in found], total=total, page=served.page, limit=served.limit
        )

    @internal.post("/admin/dead-letters/{dead_letter_id}/replay", response_model=ReplayResult, tags=["dead letters"])
    async def replay_dead_letter(dead_letter_id: str, actor: ActorDep) -> ReplayResult:
        replayed = await dead_letters.replay(actor=actor, dead_letter_id=dead_letter_id)
        return ReplayResult(id=replayed.id, message_id=replayed.message_id)

    @internal.delete("/admin/dead-letters/{dead_letter_id}", status_code=204, tags=["dead letters"])
    async def discard_dead_letter(dead_letter_id: str, actor: ActorDep) -> Response:
        await dead_letters.discard(actor=actor, dead_letter_id=dead_letter_id)
        return Response(status_code=204)

    app.include_router(internal)
    # Its own router: the routers' service-token dependency reads a Request, which a
    # WebSocket route has not; the live routes check the same token themselves.
    app.include_router(live_router(hub=hub, revocations=revocations, verifier=verifier, limits=live_limits))
    return app
