"""Tickets, and the live connections the gateway passes through to notification-service.

POST /api/auth/ticket   Bearer token → a single-use ticket for the two below
GET  /api/events        Server-Sent Events, streamed chunk by chunk, never buffered
GET  /ws                WebSocket, relayed frame by frame both ways

A live connection's caller shows a ticket (``?ticket=``, browsers) or an access
token (``Authorization``, other clients). The upstream learns who it is from the
same actor headers as every other call, plus ``X-Actor-Expires``: it ends the
connection when the access token behind it expires, and ``X-Actor-Issued-At``: it
ends the connection when the user's tokens from then are revoked (the upstream
closes it, and the pass-through ends with it). The upstream side is the adapter's
(UpstreamStream, UpstreamSocket); the gate and the answers are shared with the REST
proxy (forwarding.py).

How a WebSocket ends:
- refused Origin                 403 before the handshake completes
- no or bad ticket or token      accepted, then closed 1008 (browsers see the code)
- over the rate limit, Redis or
  the upstream unavailable       accepted, then closed 1013 (try again later)
- the upstream closes            its close code and reason, passed on
- the upstream drops             1012, so the client reconnects (elsewhere)
- the client goes                the upstream connection is closed
- the gateway shuts down         1012, and the upstream connection is closed
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
from prometheus_client import Gauge
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from gateway.adapters.tickets import RedisTicketStore
from gateway.adapters.upstream import (
    SocketBytes,
    SocketClosed,
    SocketGone,
    SocketText,
    UpstreamClient,
    UpstreamSocket,
    UpstreamStream,
)
from gateway.domain.errors import AuthenticationFailed, RateLimited, StoreUnavailable, UpstreamFailed
from gateway.domain.model import Principal, origin_allowed
from gateway.entrypoints.forwarding import CallerGate, answer_headers, client_key, upstream_failure
from interchange_common.actors import (
    ACTOR_EXPIRES_HEADER,
    ACTOR_ID_HEADER,
    ACTOR_ISSUED_AT_HEADER,
    ACTOR_ROLES_HEADER,
)
from interchange_common.problems import problem_response
from interchange_common.requestctx import REQUEST_ID_HEADER, accept_request_id, current_request_id, request_id_var
from interchange_common.servicejwt import ServiceTokenIssuer

_log = logging.getLogger(__name__)

LIVE_CONNECTIONS = Gauge("gateway_live_connections", "Open SSE streams and WebSockets", ["kind"])

EVENTS_PATH = "/internal/events"
SOCKET_PATH = "/internal/ws"
# The only query parameter a live request carries upstream (never the ticket).
_EVENTS_QUERY = ("last_event_id",)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013


class LiveConnections:
    """The open SSE streams and WebSockets, so that shutting down can end them at once
    (their clients reconnect to another instance) instead of waiting for them."""

    def __init__(self) -> None:
        self._enders: set[Callable[[], None]] = set()
        self._ending = False

    @contextlib.contextmanager
    def track(self, *, kind: str, end: Callable[[], None]) -> Iterator[None]:
        if self._ending:
            end()
        self._enders.add(end)
        gauge = LIVE_CONNECTIONS.labels(kind)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()
            self._enders.discard(end)

    def end_all(self) -> None:
        self._ending = True
        for end in list(self._enders):
            end()


def _upstream_headers(*, principal: Principal, issuer: ServiceTokenIssuer, audience: str) -> dict[str, str]:
    return {
        "authorization": issuer.authorization_for(audience=audience),
        REQUEST_ID_HEADER: current_request_id(),
        ACTOR_ID_HEADER: str(principal.user_id),
        ACTOR_ROLES_HEADER: ",".join(sorted(principal.roles)),
        ACTOR_EXPIRES_HEADER: str(int(principal.expires_at)),
        ACTOR_ISSUED_AT_HEADER: str(int(principal.issued_at)),
    }


def _refusal(error: AuthenticationFailed | RateLimited | StoreUnavailable) -> Response:
    """The problem answer to a caller the gate did not admit (or whose ticket could not be made)."""
    if isinstance(error, AuthenticationFailed):
        return problem_response(status=401, detail=str(error), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(error, RateLimited):
        return problem_response(status=429, detail="rate limit exceeded", headers=error.headers)
    return problem_response(status=503, detail=str(error), headers={"Retry-After": "1"})


def ticket_endpoint(*, gate: CallerGate, tickets: RedisTicketStore) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            admitted = await gate.admit(
                authorization=request.headers.get("authorization"), ticket=None, client=client_key(request)
            )
            ticket = await tickets.issue(principal=admitted.principal)
        except (AuthenticationFailed, RateLimited, StoreUnavailable) as e:
            return _refusal(e)
        return Response(
            content=orjson.dumps({"ticket": ticket, "expires_in": tickets.ttl_seconds}),
            media_type="application/json",
            headers={**admitted.decision.headers(), "Cache-Control": "no-store"},
        )

    return endpoint


class _RelayedStream(StreamingResponse):
    """An upstream body passed on as it arrives; the upstream connection is closed
    however the response ends (done, client gone, gateway shutting down)."""

    def __init__(self, *, stream: UpstreamStream, headers: dict[str, str], live: LiveConnections) -> None:
        super().__init__(stream.chunks(), status_code=stream.status, headers=headers)
        self._stream = stream
        self._live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with self._live.track(kind="sse", end=self._stream.close):
                await super().__call__(scope, receive, send)
        finally:
            self._stream.close()


def events_endpoint(
    *, gate: CallerGate, upstream: UpstreamClient, upstream_name: str, issuer: ServiceTokenIssuer, live: LiveConnections
) -> Callable[[Request], Awaitable[Response]]:
    audience = upstream.upstreams[upstream_name].audience

    async def endpoint(request: Request) -> Response:
        try:
            admitted = await gate.admit(
                authorization=request.headers.get("authorization"),
                ticket=request.query_params.get("ticket"),
                client=client_key(request),
            )
        except (AuthenticationFailed, RateLimited, StoreUnavailable) as e:
            return _refusal(e)
        limit_headers = admitted.decision.headers()
        headers = _upstream_headers(principal=admitted.principal, issuer=issuer, audience=audience)
        headers["accept"] = "text/event-stream"
        if (last_event_id := request.headers.get("last-event-id")) is not None:
            headers["last-event-id"] = last_event_id
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k in _EVENTS_QUERY])
        try:
            stream = await upstream.open_stream(upstream=upstream_name, path=EVENTS_PATH, query=query, headers=headers)
        except UpstreamFailed as e:
            return upstream_failure(e, audience=audience, headers=limit_headers)
        return _RelayedStream(
            stream=stream, headers=answer_headers(upstream=stream.headers, limit=limit_headers), live=live
        )

    return endpoint


def _passable(code: int | None) -> int:
    """A close code we may send on: the registered ones an endpoint may use, and the
    application range; anything else (1005 "no code", 1006 "abnormal") becomes 1000."""
    if code is not None and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return code
    return CLOSE_NORMAL


async def _refuse(websocket: WebSocket, *, code: int, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


def socket_endpoint(
    *,
    gate: CallerGate,
    upstream: UpstreamClient,
    upstream_name: str,
    issuer: ServiceTokenIssuer,
    live: LiveConnections,
    allowed_origins: Collection[str],
) -> Callable[[WebSocket], Awaitable[None]]:
    audience = upstream.upstreams[upstream_name].audience

    async def endpoint(websocket: WebSocket) -> None:
        # The HTTP middleware does not see WebSockets: the request id is set here.
        reset = request_id_var.set(accept_request_id(offered=websocket.headers.get(REQUEST_ID_HEADER)))
        try:
            await _serve_socket(websocket)
        finally:
            request_id_var.reset(reset)

    async def _serve_socket(websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if not origin_allowed(
            origin=origin,
            host=websocket.headers.get("host"),
            secure=websocket.url.scheme == "wss",
            allowed=allowed_origins,
        ):
            _log.info("websocket refused", extra={"reason": "origin", "origin": origin})
            await websocket.close(code=CLOSE_POLICY_VIOLATION)  # before accept: a 403
            return
        try:
            admitted = await gate.admit(
                authorization=websocket.headers.get("authorization"),
                ticket=websocket.query_params.get("ticket"),
                client=client_key(websocket),
            )
        except AuthenticationFailed as e:
            _log.info("websocket refused", extra={"reason": "authentication"})
            await _refuse(websocket, code=CLOSE_POLICY_VIOLATION, reason=str(e)[:120])
            return
        except RateLimited:
            await _refuse(websocket, code=CLOSE_TRY_AGAIN_LATER, reason="rate limit exceeded")
            return
        except StoreUnavailable:
            await _refuse(websocket, code=CLOSE_TRY_AGAIN_LATER, reason="try again later")
            return
        headers = _upstream_headers(principal=admitted.principal, issuer=issuer, audience=audience)
        try:
            opened = await upstream.open_socket(upstream=upstream_name, path=SOCKET_PATH, headers=headers)
        except UpstreamFailed:
            await _refuse(websocket, code=CLOSE_TRY_AGAIN_LATER, reason=f"{audience} is unavailable")
            return
        if opened.socket is None:
            refused = opened.refused_status in (401, 403)
            code = CLOSE_POLICY_VIOLATION if refused else CLOSE_INTERNAL_ERROR
            await _refuse(websocket, code=code, reason=f"{audience} refused the connection")
            return
        await websocket.accept()
        ending = asyncio.Event()
        with live.track(kind="ws", end=ending.set):
            await _relay(client=websocket, upstream=opened.socket, ending=ending)

    return endpoint


async def _relay(*, client: WebSocket, upstream: UpstreamSocket, ending: asyncio.Event) -> None:
    """Pass frames both ways until one side closes or the gateway shuts down."""

    async def client_to_upstream() -> None:
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(code=_passable(message.get("code")))
                return
            if (text := message.get("text")) is not None:
                await upstream.send_text(text)
            elif (data := message.get("bytes")) is not None:
                await upstream.send_bytes(data)

    async def upstream_to_client() -> None:
        while True:
            match await upstream.receive():
                case SocketText(text):
                    await client.send_text(text)
                case SocketBytes(data):
                    await client.send_bytes(data)
                case SocketClosed(code, reason):
                    await _close(client, code=_passable(code), reason=reason)
                    return
                case SocketGone():
                    await _close(client, code=CLOSE_SERVICE_RESTART, reason="upstream went away")
                    return

    pumps: list[asyncio.Task[Any]] = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
        asyncio.ensure_future(ending.wait()),
    ]
    try:
        done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if (error := task.exception()) is not None:
                _log.info("websocket relay ended", extra={"error": type(error).__name__})
        if ending.is_set():
            await _close(client, code=CLOSE_SERVICE_RESTART, reason="gateway restarting")
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if not upstream.closed:
            await upstream.close(code=CLOSE_GOING_AWAY)
        await _close(client, code=CLOSE_SERVICE_RESTART, reason="")


async def _close(client: WebSocket, *, code: int, reason: str) -> None:
    """Close the client's socket unless it is closed already."""
    if client.application_state is WebSocketState.DISCONNECTED or client.client_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, OSError):
        await client.close(code=code, reason=reason[:120])
