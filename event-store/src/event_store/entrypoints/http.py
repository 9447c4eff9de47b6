"""event-store's HTTP API on port 8004. Everything but health and metrics needs a
service token.

    POST /streams/{stream_id}/events     append (201; 200 when already recorded; 409)
    GET  /streams/{stream_id}/events     read a stream (?from=&direction=&limit=)
    GET  /events                         read all streams in global order (?from=&limit=)
    PUT  /streams/{stream_id}/snapshot   save a snapshot; GET loads the latest
    GET  /subscribe                      SSE: catch-up then live (?stream=&from=,
                                         or Last-Event-ID to resume after an event)
"""

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from event_store.adapters.errors import EventStorageUnavailable
from event_store.domain.errors import (
    EventStoreError,
    InvalidAppend,
    InvalidRead,
    SnapshotNotFound,
    WrongExpectedVersion,
)
from event_store.domain.model import Direction, ExpectedVersion, check_start, check_stream_id, parse_number
from event_store.domain.store import EventStore
from event_store.entrypoints.schemas import AppendIn, AppendOut, PageOut, SnapshotIn, SnapshotOut
from interchange_common.asgi import ObservabilityMiddleware
from interchange_common.health import HealthCheck, health_router
from interchange_common.httpauth import service_caller_dependency
from interchange_common.metrics import metrics_router
from interchange_common.problems import install_problem_handlers, problem_handler, problem_response
from interchange_common.servicejwt import ServiceTokenVerifier

_STATUS_OF: dict[type[Exception], int] = {
    WrongExpectedVersion: 409,
    InvalidAppend: 422,
    InvalidRead: 422,
    SnapshotNotFound: 404,
}


async def _on_domain_error(_: Request, exc: Exception) -> Response:
    if isinstance(exc, WrongExpectedVersion):
        return problem_response(status=409, detail=str(exc), actual_version=exc.actual)
    return problem_response(status=_STATUS_OF.get(type(exc), 400), detail=str(exc))


def create_http_app(
    *,
    store: EventStore,
    verifier: ServiceTokenVerifier,
    health_checks: Callable[[], Sequence[HealthCheck]],
    max_body_bytes: int,
) -> FastAPI:
    app = FastAPI(title="event-store", version="1.0.0", docs_url=None, redoc_url=None)
    install_problem_handlers(app)
    app.add_exception_handler(EventStoreError, _on_domain_error)
    app.add_exception_handler(
        EventStorageUnavailable,
        problem_handler(
            statuses={EventStorageUnavailable: 503},
            details={EventStorageUnavailable: "the event store is unavailable"},
        ),
    )
    app.add_middleware(ObservabilityMiddleware, max_body_bytes=max_body_bytes)
    app.include_router(health_router(checks=health_checks))
    app.include_router(metrics_router())
    api = APIRouter(dependencies=[Depends(service_caller_dependency(verifier=verifier))], tags=["events"])

    @api.post("/streams/{stream_id}/events", response_model=AppendOut, status_code=201)
    async def append(stream_id: str, body: AppendIn, response: Response) -> AppendOut:
        decision = await store.append(
            stream_id=stream_id,
            expected=ExpectedVersion.parse(body.expected_version),
            events=[event.to_domain() for event in body.events],
        )
        if decision.already_recorded:
            response.status_code = 200
        return AppendOut(
            stream_id=stream_id,
            first_version=decision.first_version,
            last_version=decision.last_version,
            already_recorded=decision.already_recorded,
        )

    @api.get("/streams/{stream_id}/events", response_model=PageOut)
    async def read_stream(
        stream_id: str,
        start: Annotated[int, Query(alias="from", ge=0)] = 0,
        direction: Direction = Direction.FORWARD,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> PageOut:
        page = await store.read_stream(stream_id=stream_id, start=start, direction=direction, limit=limit)
        return PageOut(events=[event.as_json() for event in page.events], next=page.next, end=page.end)

    @api.get("/events", response_model=PageOut)
    async def read_all(
        start: Annotated[int, Query(alias="from", ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> PageOut:
        page = await store.read_all(start=start, limit=limit)
        return PageOut(events=[event.as_json() for event in page.events], next=page.next, end=page.end)

    @api.put("/streams/{stream_id}/snapshot", response_model=SnapshotOut)
    async def save_snapshot(stream_id: str, body: SnapshotIn) -> SnapshotOut:
        kept = await store.save_snapshot(stream_id=stream_id, version=body.version, data=body.data)
        return SnapshotOut(stream_id=kept.stream_id, version=kept.version, data=kept.data, saved_at=kept.saved_at)

    @api.get("/streams/{stream_id}/snapshot", response_model=SnapshotOut)
    async def load_snapshot(stream_id: str) -> SnapshotOut:
        kept = await store.load_snapshot(stream_id=stream_id)
        return SnapshotOut(stream_id=kept.stream_id, version=kept.version, data=kept.data, saved_at=kept.saved_at)

    async def subscription(
        stream: str | None = None,
        start: Annotated[int, Query(alias="from", ge=0)] = 0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> tuple[str | None, int]:
        """Checked before the stream opens, so that bad input is still a 422 problem."""
        if stream is not None:
            check_stream_id(stream)
        if last_event_id is not None:
            start = parse_number(last_event_id, what="Last-Event-ID") + 1
        return stream, check_start(start, what="from")

    @api.get("/subscribe", response_class=EventSourceResponse)
    async def subscribe(
        target: Annotated[tuple[str | None, int], Depends(subscription)],
    ) -> AsyncIterator[ServerSentEvent]:
        """Each event's SSE id is its version (one stream) or its position (all)."""
        stream, start = target
        async for event in store.subscribe(stream_id=stream, start=start):
            cursor = event.version if stream is not None else event.position
            yield ServerSentEvent(data=event.as_json(), id=str(cursor), event=event.type)

    app.include_router(api)
    return app
