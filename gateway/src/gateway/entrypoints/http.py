"""The gateway's HTTP app.

/                        the page (static/index.html), with its script preloaded
/static/                 the page's files
/health, /health/live    whether the gateway is healthy (no detail on a public port)
/openapi.json            the public API, composed from the upstreams' documents
/docs, /docs/assets/     that document in Swagger UI, its files served from an installed package
/api/auth/ticket, /api/events, /ws
                         tickets and the live connections (see entrypoints/passthrough.py)
every row of the route table
                         forwarded to its upstream

operations_app, on the operations port (OPS_PORT): /health with every dependency's
state and timing, /health/live and /metrics.

Routing reads the path as the client sent it (RawPathRouting): an encoded slash is
part of its segment, never a separator.

Every row of the route table becomes one plain Starlette route whose endpoint
takes a slot of its upstream's concurrency limit (adapters.admission; refused at
once with 503 when none frees up within the short wait), checks the caller's token,
reads its revocation mark and counts the call against its rate limit (one Redis
round trip, ``check``), and forwards the request with a service token, the
request id and the caller's identity. It is a plain route, not a FastAPI operation:
this is the hottest path in the deployment, and dependency injection and body
validation belong to the upstream that owns the data.
"""

import importlib.resources
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, WebSocketRoute
from starlette.routing import Route as StarletteRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.adapters.admission import ConcurrencyLimit
from gateway.adapters.apidocs import ApiDocuments
from gateway.adapters.tickets import RedisTicketStore
from gateway.adapters.upstream import UpstreamClient
from gateway.domain.errors import AuthenticationFailed, Forbidden, StoreUnavailable, UpstreamFailed
from gateway.domain.model import Access, Principal, RateDecision, RateLimitPolicy, Route
from gateway.entrypoints.forwarding import (
    CallerGate,
    Check,
    Hit,
    Verify,
    answer_headers,
    client_key,
    upstream_failure,
)
from gateway.entrypoints.passthrough import LiveConnections, events_endpoint, socket_endpoint, ticket_endpoint
from interchange_common.actors import ACTOR_ID_HEADER, ACTOR_ROLES_HEADER
from interchange_common.asgi import BODY_TIMEOUT_SECONDS, LOG_FIELDS, ObservabilityMiddleware
from interchange_common.health import HealthCheck, health_router
from interchange_common.metrics import metrics_router
from interchange_common.problems import install_problem_handlers, problem_response
from interchange_common.requestctx import REQUEST_ID_HEADER, current_request_id
from interchange_common.servicejwt import ServiceTokenIssuer

STATIC_DIR = Path(__file__).parent / "static"
# Server push is gone from browsers; a preload hint on the page does its job.
_INDEX_HEADERS = {"Link": "</static/app.js>; rel=preload; as=script", "Cache-Control": "no-cache"}
# Swagger UI's script, styles and icon, as the fastapi-offline package ships them: the
# page loads nothing from another host. Its Swagger UI is 5.x, the first to read
# OpenAPI 3.1 (the document's version); swagger-ui-bundle's 4.x refuses to render it.
SWAGGER_UI_DIR = Path(str(importlib.resources.files("fastapi_offline") / "static"))
DOCS_ASSETS = "/docs/assets"


async def index(_: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=_INDEX_HEADERS)


@dataclass(frozen=True, slots=True)
class LiveSetup:
    """What the ticket and live endpoints need besides what every route needs."""

    upstream_name: str
    tickets: RedisTicketStore
    allowed_origins: Sequence[str]
    connections: LiveConnections


Endpoint = Callable[[Request], Awaitable[Response]]

_ENCODED_SLASH = re.compile("%2f", re.IGNORECASE)
# How long a request waits for a slot of its upstream's limit (IN_FLIGHT_WAIT_SECONDS's default).
IN_FLIGHT_WAIT_SECONDS = 0.02
_SHED_HEADERS = {"Retry-After": "1"}


def routed_path(raw_path: bytes) -> str:
    """The path to route by: each raw segment decoded on its own, an encoded slash
    kept as ``%2F`` inside its segment. ``/api/orders/x%2Fcancel`` is the order
    ``x%2Fcancel`` (not a plain segment, so refused like any bad parameter), never
    ``/api/orders/x/cancel``. An encoded backslash needs no such care: decoded, it
    stays in its segment (nothing here splits on it) and fails the same check."""
    return "/".join(
        "%2F".join(unquote(piece) for piece in _ENCODED_SLASH.split(segment))
        for segment in raw_path.decode("latin-1").split("/")
    )


class RawPathRouting:
    """Routes every HTTP request and WebSocket by ``routed_path``. The server (Hypercorn)
    decodes the whole path before the app sees it, so ``%2F`` would become a separator
    and a parameter could smuggle in more segments: another route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") if scope["type"] in ("http", "websocket") else None
        if raw_path and b"%2f" in raw_path.lower():
            scope = {**scope, "path": routed_path(raw_path)}
        await self.app(scope, receive, send)


def by_method(endpoints: Mapping[str, Endpoint]) -> Endpoint:
    """One endpoint for a path's methods (HEAD is answered as GET: Starlette allows it with GET)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return endpoint


def repeated_query_parameter(request: Request) -> str | None:
    """A query parameter named twice, if any. No public parameter takes a list, and
    which of two values a service would read (the last, in FastAPI) is not the
    caller's to guess: the request is refused instead (found by the API fuzzer)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            return name
        seen.add(name)
    return None


def admitted(endpoint: Endpoint, *, limit: ConcurrencyLimit) -> Endpoint:
    """``endpoint`` within its upstream's concurrency limit. Refused first, before any
    other work (token, rate limit): a 503 that nothing was done for, so safe to send
    again, and cheap to give when the machine has no time to spare. The access log
    line says ``shed`` and the upstream."""
    detail = f"{limit.name} is at capacity; try again shortly"
    log_fields = {"shed": limit.name}

    async def endpoint_within_limit(request: Request) -> Response:
        if not (limit.try_enter() or await limit.enter()):
            request.scope[LOG_FIELDS] = log_fields
            return problem_response(status=503, detail=detail, headers=_SHED_HEADERS)
        try:
            return await endpoint(request)
        finally:
            limit.leave()

    return endpoint_within_limit


def proxy_endpoint(
    *,
    route: Route,
    policy: RateLimitPolicy,
    ip_policy: RateLimitPolicy,
    upstream: UpstreamClient,
    verify: Verify,
    hit: Hit,
    check: Check,
    issuer: ServiceTokenIssuer,
) -> Endpoint:
    audience = upstream.upstreams[route.upstream].audience
    forward_headers = route.forward_headers
    protected = route.access is not Access.PUBLIC

    def unauthenticated(*, refused: RateDecision | None, detail: str) -> Response:
        """401, or 429 when the client address's count of failed attempts is over its limit."""
        if refused is not None and not refused.allowed:
            return problem_response(status=429, detail="rate limit exceeded", headers=refused.headers())
        return problem_response(status=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})

    async def endpoint(request: Request) -> Response:
        try:
            return await proxied(request)
        except StoreUnavailable as e:  # the rate limiter, set to fail closed
            return problem_response(status=503, detail=str(e), headers={"Retry-After": "1"})

    async def proxied(request: Request) -> Response:
        principal: Principal | None = None
        decision: RateDecision
        if protected:
            try:
                principal = await verify(header=request.headers.get("authorization"))
            except AuthenticationFailed as e:
                # Failed attempts count against the client address: guessing tokens costs.
                refused = await hit(policy=ip_policy, key=client_key(request))
                return unauthenticated(refused=refused, detail=str(e))
            forbidden: str | None = None
            try:
                route.authorize(principal=principal)
            except Forbidden as e:
                forbidden = str(e)
            # The revocation mark and the count in one round trip; a caller the route
            # refuses is not counted, and hears 403 only once the token is known good.
            standing = await check(
                principal=principal,
                policy=None if forbidden is not None else policy,
                key=f"user:{principal.user_id}",
                ip_policy=ip_policy,
                client=client_key(request),
            )
            if standing.revoked:
                return unauthenticated(refused=standing.decision, detail="token revoked")
            if forbidden is not None:
                return problem_response(status=403, detail=forbidden)
            assert standing.decision is not None  # counted: a policy was given
            decision = standing.decision
        else:
            decision = await hit(policy=policy, key=client_key(request))
        limit_headers = decision.headers()
        if not decision.allowed:
            return problem_response(status=429, detail="rate limit exceeded", headers=limit_headers)
        path = route.upstream_path(path_params=request.path_params, principal=principal)
        if path is None:
            return problem_response(status=404, detail="not found", headers=limit_headers)
        repeated = repeated_query_parameter(request)
        if repeated is not None:
            return problem_response(
                status=400, detail=f"query parameter {repeated!r} is given more than once", headers=limit_headers
            )
        headers = {name: value for name in forward_headers if (value := request.headers.get(name)) is not None}
        headers["authorization"] = issuer.authorization_for(audience=audience)
        headers[REQUEST_ID_HEADER] = current_request_id()
        if principal is not None:
            headers[ACTOR_ID_HEADER] = str(principal.user_id)
            headers[ACTOR_ROLES_HEADER] = ",".join(sorted(principal.roles))
        try:
            answer = await upstream.forward(
                upstream=route.upstream,
                method=route.method,
                path=path,
                query=request.url.query,
                headers=headers,
                body=await request.body(),
            )
        except UpstreamFailed as e:
            return upstream_failure(e, audience=audience, headers=limit_headers)
        return Response(
            content=answer.body,
            status_code=answer.status,
            headers=answer_headers(upstream=answer.headers, limit=limit_headers),
        )

    return endpoint


def document_endpoint(*, app: FastAPI, documents: ApiDocuments) -> Endpoint:
    async def endpoint(_: Request) -> Response:
        try:
            body = await documents.current(own=app.openapi())
        except UpstreamFailed as e:
            return problem_response(status=503, detail=str(e), headers={"Retry-After": "5"})
        return Response(content=body, media_type="application/json", headers={"Cache-Control": "no-cache"})

    return endpoint


def docs_endpoint(*, title: str) -> Endpoint:
    """The Swagger UI page of /openapi.json, made once: nothing in it changes."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=title,
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        # No badge from Swagger's online validator: it would send the document's address to a third party.
        swagger_ui_parameters={"validatorUrl": None},
    ).body

    async def endpoint(_: Request) -> Response:
        return Response(content=page, media_type="text/html", headers={"Cache-Control": "no-cache"})

    return endpoint


def operations_app(*, health_checks: Callable[[], Sequence[HealthCheck]]) -> FastAPI:
    """The operations port's app: /health with every dependency's state and timing,
    /health/live and /metrics; nothing else."""
    app = FastAPI(title="Interchange gateway operations", docs_url=None, redoc_url=None, openapi_url=None)
    install_problem_handlers(app)
    app.include_router(health_router(checks=health_checks))
    app.include_router(metrics_router())
    return app


def create_app(
    *,
    routes: Sequence[Route],
    policies: Mapping[str, RateLimitPolicy],
    upstream: UpstreamClient,
    verify: Verify,
    hit: Hit,
    check: Check,
    issuer: ServiceTokenIssuer,
    health_checks: Callable[[], Sequence[HealthCheck]],
    cors_origins: Sequence[str],
    max_body_bytes: int,
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    live: LiveSetup | None = None,
    api_documents: ApiDocuments | None = None,
    in_flight_wait_seconds: float = IN_FLIGHT_WAIT_SECONDS,
) -> FastAPI:
    app = FastAPI(
        title="Interchange gateway",
        version="1.0.0",
        description="The public API of Interchange. The full contract: docs/api.md in the repository.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_problem_handlers(app)
    # The public ports say whether the gateway is healthy, not what is down behind it;
    # the detailed /health and /metrics are on the operations port (operations_app).
    app.include_router(health_router(checks=health_checks, detail=False))
    app.router.routes.append(StarletteRoute("/", index, methods=["GET"], name="The page"))
    app.router.routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    if api_documents is not None:
        # Public like the page, with no token and no rate limit (the document is composed
        # at most once a minute, the rest is files), and not in the document themselves.
        app.router.routes += [
            StarletteRoute("/openapi.json", document_endpoint(app=app, documents=api_documents), methods=["GET"]),
            StarletteRoute(
                "/docs",
                docs_endpoint(title=f"{app.title} API"),
                methods=["GET"],
                name="The API in Swagger UI",
                include_in_schema=False,
            ),
            Mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_UI_DIR), name="docs assets"),
        ]
    if live is not None:
        gate = CallerGate(
            verify=verify,
            redeem=live.tickets.redeem,
            hit=hit,
            check=check,
            policy=policies["default"],
            ip_policy=policies["default"],
        )
        app.router.routes += [
            StarletteRoute(
                "/api/auth/ticket",
                ticket_endpoint(gate=gate, tickets=live.tickets),
                methods=["POST"],
                name="A ticket for /api/events and /ws",
            ),
            StarletteRoute(
                "/api/events",
                events_endpoint(
                    gate=gate,
                    upstream=upstream,
                    upstream_name=live.upstream_name,
                    issuer=issuer,
                    live=live.connections,
                ),
                methods=["GET"],
                name="The caller's events (SSE)",
            ),
            WebSocketRoute(
                "/ws",
                socket_endpoint(
                    gate=gate,
                    upstream=upstream,
                    upstream_name=live.upstream_name,
                    issuer=issuer,
                    live=live.connections,
                    allowed_origins=frozenset(live.allowed_origins),
                ),
                name="WebSocket",
            ),
        ]
    # One limit per upstream, shared by its routes; the live routes above take none.
    limits = {
        name: ConcurrencyLimit(name=target.audience, limit=target.max_in_flight, wait_seconds=in_flight_wait_seconds)
        for name, target in upstream.upstreams.items()
        if target.max_in_flight is not None
    }
    # One Starlette route per path, so that a 405 lists every method the path takes in Allow.
    by_path: dict[str, dict[str, Endpoint]] = {}
    for route in routes:
        endpoint = proxy_endpoint(
            route=route,
            policy=policies[route.rate_limit],
            ip_policy=policies["default"],
            upstream=upstream,
            verify=verify,
            hit=hit,
            check=check,
            issuer=issuer,
        )
        if (limit := limits.get(route.upstream)) is not None:
            endpoint = admitted(endpoint, limit=limit)
        by_path.setdefault(route.path, {})[route.method] = endpoint
    for path, endpoints in by_path.items():
        app.router.routes.append(StarletteRoute(path, by_method(endpoints), methods=list(endpoints), name=path))
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "if-match", "idempotency-key", "x-request-id"],
            expose_headers=[
                "x-request-id",
                "etag",
                "retry-after",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
            ],
        )
    app.add_middleware(
        ObservabilityMiddleware, max_body_bytes=max_body_bytes, body_timeout_seconds=body_timeout_seconds
    )
    # Outermost: the logs and every route see the same path.
    app.add_middleware(RawPathRouting)
    return app
