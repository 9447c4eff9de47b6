"""ObservabilityMiddleware: the one ASGI layer every HTTP service puts outermost.

For each HTTP request it
- accepts the caller's X-Request-ID (or makes one), exposes it to logs and clients
  through the context variable, and echoes it on the response;
- refuses headers over 16 KiB in all with 431, and bodies over the size cap with
  413, whether announced or streamed;
- answers 408 when the request body has not all arrived within the body timeout
  (a slow client holds no request for ever; the servers bound the headers: see
  BODY_TIMEOUT_SECONDS);
- takes the caller's deadline (X-Request-Timeout-Ms, interchange_common.deadlines)
  for the work it starts and answers 504 when it passes;
- cancels the request's work when the caller goes away before the answer;
- while the instance drains (interchange_common.lifecycle), asks HTTP/1.1 callers
  to close the connection after the answer;
- turns an unhandled exception into a 500 problem (logged, never shown);
- writes one access log line and records Prometheus metrics by route template.

It is plain ASGI rather than BaseHTTPMiddleware: it sits on the hottest path.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Histogram

from interchange_common import lifecycle
from interchange_common.deadlines import DEADLINE_HEADER, deadline_in, parse_timeout
from interchange_common.problems import PROBLEM_CONTENT_TYPE, problem_body
from interchange_common.requestctx import REQUEST_ID_HEADER, accept_request_id, request_id_var

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
_DEADLINE_HEADER_BYTES = DEADLINE_HEADER.encode()
_CONNECTION_CLOSE = (b"connection", b"close")
# Names and values of all request headers together; past it, 431. The servers' own
# limits are looser (Hypercorn reads 64 KiB at a time, httptools has none).
MAX_HEADER_BYTES = 16 * 1024
# The whole request body must arrive within this time of the request's start. The
# headers before it are the server's to bound: Hypercorn (the gateway) closes a
# connection whose request head is not complete within its keep-alive timeout.
# After the body, waiting is unbounded (an SSE client sends nothing for hours).
BODY_TIMEOUT_SECONDS = 30.0
_CLOSABLE_VERSIONS = ("1.0", "1.1")  # HTTP/2 has no Connection header (it sends GOAWAY)
_log = logging.getLogger("interchange.access")

REQUESTS = Counter("http_requests_total", "HTTP requests served", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to serve an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


# Any other method string becomes OTHER: label values must not be the caller's to invent.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _BodyRefused(Exception):
    """A streamed request body went past the size cap or the body timeout."""

    def __init__(self, *, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _too_large() -> _BodyRefused:
    return _BodyRefused(status=413, detail="request body too large")


def _too_slow(seconds: float) -> _BodyRefused:
    return _BodyRefused(status=408, detail=f"the request body did not arrive within {seconds:g} s")


class _CallerWatch:
    """Reads the request's messages for the app in a task of its own, so that the
    caller going away (``http.disconnect`` before the response is complete) is seen
    at once and cancels the request's task, whatever the app is awaiting.

    ``with watch:`` around the app: starts the reading task and stops it after."""

    def __init__(self, *, receive: Receive) -> None:
        self._receive = receive
        self._messages: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        self._reader: asyncio.Task[None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self.response_complete = False
        self.caller_gone = False

    def __enter__(self) -> "_CallerWatch":
        self._task = asyncio.current_task()
        self._reader = asyncio.create_task(self._read())
        return self

    def __exit__(self, *_: object) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def receive(self) -> Message:
        return await self._messages.get()

    async def _read(self) -> None:
        try:
            while (message := await self._receive())["type"] != "http.disconnect":
                await self._messages.put(message)
        except Exception:
            _log.exception("reading the request failed")  # as if the caller had gone
        if not self.response_complete and self._task is not None:
            self.caller_gone = True
            self._task.cancel()
        if self._messages.empty():
            self._messages.put_nowait({"type": "http.disconnect"})  # for a streaming response still reading


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_header_bytes: int = MAX_HEADER_BYTES,
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self._app = app
        self._max_body = max_body_bytes
        self._max_headers = max_header_bytes
        self._body_timeout = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        offered: str | None = None
        announced = 0
        timeout: float | None = None
        header_bytes = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value)
            if name == _REQUEST_ID_HEADER_BYTES:
                offered = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                announced = int(value)
            elif name == _DEADLINE_HEADER_BYTES:
                timeout = parse_timeout(value.decode("latin-1"))
        request_id = accept_request_id(offered=offered)
        reset = request_id_var.set(request_id)
        rid_header = (_REQUEST_ID_HEADER_BYTES, request_id.encode())
        started = time.perf_counter()
        status = 500
        response_started = False

        watch = _CallerWatch(receive=receive)

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), rid_header]
                if lifecycle.current().draining and scope.get("http_version") in _CLOSABLE_VERSIONS:
                    # Going away: the caller retires this connection after the answer.
                    message["headers"].append(_CONNECTION_CLOSE)
            elif not message.get("more_body", False):
                watch.response_complete = True
            await send(message)

        received = 0
        body_complete = False
        refused: _BodyRefused | None = None
        body_deadline = asyncio.get_running_loop().time() + self._body_timeout

        async def receive_capped() -> Message:
            nonlocal received, body_complete, refused
            if body_complete:
                return await watch.receive()
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await watch.receive()
            except TimeoutError:
                refused = _too_slow(self._body_timeout)
                raise refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > self._max_body:
                    refused = _too_large()
                    raise refused
            return message

        async def send_checked(message: Message) -> None:
            # FastAPI turns an error while reading the body into its own 400: when the
            # reason was our cap or timeout, the client gets the answer that says so.
            if refused is not None:
                if message["type"] == "http.response.start":
                    await self._send_problem(send_with_id, status=refused.status, detail=refused.detail)
                return
            await send_with_id(message)

        within = asyncio.timeout(timeout)
        try:
            if header_bytes > self._max_headers:
                await self._send_problem(send_with_id, status=431, detail="request header fields too large")
            elif announced > self._max_body:
                large = _too_large()
                await self._send_problem(send_with_id, status=large.status, detail=large.detail)
            else:
                with deadline_in(timeout), watch:
                    async with within:
                        await self._app(scope, receive_capped, send_checked)
        except _BodyRefused as e:
            if not response_started:
                await self._send_problem(send_with_id, status=e.status, detail=e.detail)
        except asyncio.CancelledError:
            if not watch.caller_gone:
                raise
            # Our own cancellation: the caller went away, so its work stopped. Nobody
            # is left to answer; the server expects the app to return.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            status = status if response_started else 499
        except TimeoutError:
            if not within.expired():
                _log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if not response_started:
                deadline = within.expired()
                await self._send_problem(
                    send_with_id,
                    status=504 if deadline else 500,
                    detail="the caller's deadline passed" if deadline else "internal error",
                )
        except Exception:
            _log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if not response_started:
                await self._send_problem(send_with_id, status=500, detail="internal error")
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            _log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(reset)

    @staticmethod
    async def _send_problem(send: Send, *, status: int, detail: str) -> None:
        body = problem_body(status=status, detail=detail)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
