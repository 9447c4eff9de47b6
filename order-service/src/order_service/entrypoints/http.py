"""order-service's HTTP API on port 8002, behind the gateway (docs/api.md "Orders").

Public: /health, /health/live, /metrics.
Internal (/internal/…): a service token is required; the gateway names the user in
X-Actor-Id and X-Actor-Roles (interchange_common.actors).

    /internal/orders…                                  the orders (docs/api.md "Orders")
    GET    /internal/admin/parked-events               admin: events the read model's
                                                       projection could not apply
    POST   /internal/admin/parked-events/{id}/replay   admin: apply one again now (409
                                                       when it fails again: kept)
    DELETE /internal/admin/parked-events/{id}          admin: skip one

Single-order responses carry ``ETag: "<version>"``; changes take ``If-Match`` with
that ETag and answer 412 when the order has moved on. A read returns the result
of every command that has answered; ``?min_version=N`` also answers 412 when the
order has no version N yet, never an older order.

A database that cannot serve the request (interchange_common.database) is a 503 with
Retry-After, like an event store or user-service that does not answer.
"""

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Query
from starlette.responses import Response

from interchange_common.actors import Actor
from interchange_common.asgi import ObservabilityMiddleware
from interchange_common.health import HealthCheck, health_router
from interchange_common.httpauth import actor_dependency, service_caller_dependency
from interchange_common.metrics import metrics_router
from interchange_common.problems import install_problem_handlers, problem_handler
from interchange_common.requestctx import current_request_id
from interchange_common.servicejwt import ServiceTokenVerifier
from order_service.domain.errors import (
    ConcurrencyConflict,
    IdempotencyKeyReused,
    InvalidOrder,
    InvalidTransition,
    OrderError,
    OrderNotFound,
    OrderStoreUnavailable,
    ParkedEventNotFound,
    ParkedEventStillFails,
    PermissionDenied,
    UserCheckUnavailable,
    UserMayNotOrder,
    VersionMismatch,
    VersionNotReached,
)
from order_service.domain.order import Order
from order_service.domain.usecases import MAX_PAGE_SIZE, Orders, ParkedEventAdmin
from order_service.entrypoints.schemas import (
    CancelRequest,
    OrderCreate,
    OrderEvent,
    OrderList,
    OrderPublic,
    ParkedEventList,
    ParkedEventPublic,
    ParkedEventReplayed,
)

_STATUS_OF: dict[type[Exception], int] = {
    InvalidOrder: 422,
    IdempotencyKeyReused: 422,
    UserMayNotOrder: 422,
    OrderNotFound: 404,
    ParkedEventNotFound: 404,
    PermissionDenied: 403,
    ParkedEventStillFails: 409,
    InvalidTransition: 409,
    ConcurrencyConflict: 409,
    VersionMismatch: 412,
    VersionNotReached: 412,
    OrderStoreUnavailable: 503,
    UserCheckUnavailable: 503,
}
# An order's ETag as If-Match takes it ("3", W/"3" or 3), or * for any version.
IF_MATCH_PATTERN = r'^\s*(?:\*|(?:W/)?"?\d{1,18}"?)\s*$'
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def _if_match(header: str | None) -> int | None:
    """The version an If-Match header names (None: no header, or ``*``)."""
    if header is None or header.strip() == "*":
        return None
    found = _ETAG.match(header.strip())
    if found is None:
        raise InvalidOrder('If-Match takes an order\'s ETag, for example "3"')
    return int(found.group(1))


def _one(order: Order, *, status_code: int = 200, location: bool = False) -> Response:
    headers = {"ETag": f'"{order.version}"'}
    if location:
        headers["Location"] = f"/api/orders/{order.id}"
    return Response(
        content=OrderPublic.of(order).model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def _order_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as e:
        raise OrderNotFound("order not found") from e


def create_http_app(
    *,
    orders: Orders,
    parked: ParkedEventAdmin,
    verifier: ServiceTokenVerifier,
    health_checks: Callable[[], Sequence[HealthCheck]],
    max_body_bytes: int,
) -> FastAPI:
    app = FastAPI(title="order-service", version="1.0.0", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    app.add_exception_handler(OrderError, problem_handler(statuses=_STATUS_OF))
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=max_body_bytes)
    app.include_router(health_router(checks=health_checks))
    app.include_router(metrics_router())

    require_service = service_caller_dependency(verifier=verifier)
    internal = APIRouter(prefix="/internal", dependencies=[Depends(require_service)], tags=["orders"])
    admin = APIRouter(prefix="/internal/admin", dependencies=[Depends(require_service)], tags=["parked events"])
    ActorDep = Annotated[Actor, Depends(actor_dependency(require_service=require_service))]
    IfMatch = Annotated[str | None, Header(max_length=64, pattern=IF_MATCH_PATTERN)]
    PageQuery = Annotated[int, Query(ge=1, le=1_000_000)]
    LimitQuery = Annotated[int, Query(ge=1, le=1_000_000, description=f"capped at {MAX_PAGE_SIZE}")]

    @internal.post(
        "/orders",
        status_code=201,
        response_model=OrderPublic,
        summary="Place an order",
        responses={200: {"model": OrderPublic, "description": "The order this Idempotency-Key placed before"}},
    )
    async def place_order(
        body: OrderCreate,
        actor: ActorDep,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> Response:
        placed = await orders.place(
            actor=actor,
            items=tuple(item.to_item() for item in body.items),
            idempotency_key=idempotency_key,
            request_id=current_request_id(),
        )
        return _one(placed.order, status_code=201 if placed.created else 200, location=True)

    @internal.get("/orders", response_model=OrderList, summary="The caller's orders, newest first")
    async def list_orders(actor: ActorDep, page: PageQuery = 1, limit: LimitQuery = 10) -> OrderList:
        found, total, served = await orders.list_own(actor=actor, page=page, limit=limit)
        return OrderList(items=[OrderPublic.of(order) for order in found], total=total, page=page, limit=served)

    @internal.get("/orders/{order_id}", response_model=OrderPublic, summary="One order")
    async def get_order(
        order_id: str,
        actor: ActorDep,
        min_version: Annotated[
            int,
            Query(
                ge=0,
                le=2**31 - 1,
                description="never an older order: 412 when the order has no such version yet",
            ),
        ] = 0,
    ) -> Response:
        return _one(await orders.get(actor=actor, order_id=_order_id(order_id), min_version=min_version))

    @internal.post("/orders/{order_id}/cancel", response_model=OrderPublic, summary="Cancel an order")
    async def cancel_order(
        order_id: str, actor: ActorDep, if_match: IfMatch = None, body: CancelRequest | None = None
    ) -> Response:
        cancelled = await orders.cancel(
            actor=actor,
            order_id=_order_id(order_id),
            if_match=_if_match(if_match),
            reason=body.reason if body else "",
            request_id=current_request_id(),
        )
        return _one(cancelled)

    @internal.post("/orders/{order_id}/confirm", response_model=OrderPublic, summary="Confirm an order (admin)")
    async def confirm_order(order_id: str, actor: ActorDep, if_match: IfMatch = None) -> Response:
        return _one(
            await orders.confirm(
                actor=actor, order_id=_order_id(order_id), if_match=_if_match(if_match), request_id=current_request_id()
            )
        )

    @internal.post("/orders/{order_id}/ship", response_model=OrderPublic, summary="Ship an order (admin)")
    async def ship_order(order_id: str, actor: ActorDep, if_match: IfMatch = None) -> Response:
        return _one(
            await orders.ship(
                actor=actor, order_id=_order_id(order_id), if_match=_if_match(if_match), request_id=current_request_id()
            )
        )

    @internal.get("/orders/{order_id}/events", response_model=list[OrderEvent], summary="The order's history")
    async def order_events(order_id: str, actor: ActorDep) -> list[OrderEvent]:
        return [OrderEvent.of(event) for event in await orders.history(actor=actor, order_id=_order_id(order_id))]

    @admin.get(
        "/parked-events",
        response_model=ParkedEventList,
        summary="Events the orders projection could not apply (admin)",
    )
    async def list_parked_events(actor: ActorDep, page: PageQuery = 1, limit: LimitQuery = 10) -> ParkedEventList:
        found, total, served = await parked.list(actor=actor, page=page, limit=limit)
        return ParkedEventList(
            items=[ParkedEventPublic.of(each) for each in found], total=total, page=page, limit=served
        )

    @admin.post(
        "/parked-events/{parked_id}/replay",
        response_model=ParkedEventReplayed,
        summary="Apply a parked event to the read model again (admin)",
    )
    async def replay_parked_event(parked_id: str, actor: ActorDep) -> ParkedEventReplayed:
        replayed = await parked.replay(actor=actor, parked_id=parked_id)
        return ParkedEventReplayed(id=replayed.id, event_id=replayed.event.id)

    @admin.delete(
        "/parked-events/{parked_id}",
        status_code=204,
        summary="Skip a parked event (admin)",
    )
    async def skip_parked_event(parked_id: str, actor: ActorDep) -> Response:
        await parked.skip(actor=actor, parked_id=parked_id)
        return Response(status_code=204)

    app.include_router(internal)
    app.include_router(admin)
    return app
