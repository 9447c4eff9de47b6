"""AccessLogMiddleware: one access log line and the Prometheus request metrics per
request, by route template, with the status the caller was finally sent (whichever
layer answered) and 499 when the caller went away before any answer. A layer or the
app may add fields to the line: ``scope[LOG_FIELDS] = {...}`` (say, why it refused)."""

import logging
import time
from collections.abc import Awaitable

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interchange_common import tracing
from interchange_common.asgi.callergone import CALLER_GONE

_log = logging.getLogger("interchange.access")

LOG_FIELDS = "interchange.log_fields"
_NO_FIELDS: dict[str, object] = {}

REQUESTS = Counter("http_requests_total", "HTTP requests served", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to serve an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# Any other method string becomes OTHER: label values must not be the caller's to invent.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Each request's two series, kept: prometheus_client's labels() validates and locks on
# every call. Bounded: known methods, the app's route templates, status codes.
_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _new_series(key: tuple[str, str, int]) -> tuple[Counter, Histogram]:
    method, route, status = key
    series = _series[key] = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
    return series


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None

        def send_noting_status(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed = time.perf_counter() - started
            if status is None:
                # No answer: the server sends 500, unless the caller is gone (nobody to send to).
                status = 499 if scope.get(CALLER_GONE) else 500
            method = scope["method"]
            route = getattr(scope.get("route"), "path", None)  # set by Starlette's router
            key = (
                method if method in _KNOWN_METHODS else "OTHER",
                route if isinstance(route, str) else "unmatched",
                status,
            )
            if isinstance(route, str) and tracing.enabled():
                tracing.name_server_span(method=method, route=route)
            counted, timed = _series.get(key) or _new_series(key)
            counted.inc()
            timed.observe(elapsed)
            _log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    **scope.get(LOG_FIELDS, _NO_FIELDS),
                },
            )
