"""The ASGI layers every HTTP service puts outermost: one concern each, plain ASGI
(they sit on the hottest path), and ObservabilityMiddleware, which stacks them in
the one order that works. A service installs that, in one line::

    app.add_middleware(ObservabilityMiddleware, max_body_bytes=settings.max_body_bytes)

Outside in, for each HTTP request (lifespan and WebSocket scopes pass straight through)::

    layer                         answers   what it does
    CloseWhenDrainingMiddleware             while draining, HTTP/1.x answers say Connection: close
    (OpenTelemetry's, when traced)          a SERVER span, the caller's traceparent honoured, ours sent
    RequestIdMiddleware                     X-Request-ID taken or made, in the context, echoed
    AccessLogMiddleware                     one log line and the metrics, with the status sent
    UnhandledErrorMiddleware      500       an exception becomes a logged problem
    HeaderLimitMiddleware         431       headers over 16 KiB, refused before any work starts
    DeadlineMiddleware            504       X-Request-Timeout-Ms bounds the work
    CallerGoneMiddleware          (499)     the caller leaving cancels the work; nobody to answer
    BodyLimitMiddleware           413, 408  a body over the cap (announced or streamed), or too slow
    the app

Why this order: every answer made inside passes out through the access log, which
records its status, and through the request id, which its problem body and log lines
carry; the span is current for all of them, so their log lines carry its ids, and it
sees the request id that is sent. The caller watch reads the request for everything inside it, so the body
limits, which count and time what the app reads, sit within it. Connection: close
comes after the request id in the headers, as it always has.

Each layer's ``__call__`` is a coroutine function (servers tell ASGI 3 apps by it); the
``send`` a layer hands inward is a plain function returning the outer ``send``'s
awaitable when it only looks or adds a header: no coroutine of its own per message.
What several layers read (one header, whether the answer has started) is in
``asgi.messages``.
"""

from starlette.types import ASGIApp

from interchange_common import tracing
from interchange_common.asgi.accesslog import LOG_FIELDS, AccessLogMiddleware
from interchange_common.asgi.callergone import CallerGoneMiddleware
from interchange_common.asgi.deadline import DeadlineMiddleware
from interchange_common.asgi.draining import CloseWhenDrainingMiddleware
from interchange_common.asgi.limits import (
    BODY_TIMEOUT_SECONDS,
    MAX_HEADER_BYTES,
    BodyLimitMiddleware,
    HeaderLimitMiddleware,
)
from interchange_common.asgi.requestid import RequestIdMiddleware
from interchange_common.asgi.unhandled import UnhandledErrorMiddleware

__all__ = [
    "BODY_TIMEOUT_SECONDS",
    "LOG_FIELDS",
    "MAX_HEADER_BYTES",
    "AccessLogMiddleware",
    "BodyLimitMiddleware",
    "CallerGoneMiddleware",
    "CloseWhenDrainingMiddleware",
    "DeadlineMiddleware",
    "HeaderLimitMiddleware",
    "ObservabilityMiddleware",
    "RequestIdMiddleware",
    "UnhandledErrorMiddleware",
]


class ObservabilityMiddleware(CloseWhenDrainingMiddleware):
    """The whole stack above around ``app``. It is the outermost layer itself, built
    around the rest: a wrapper of its own would cost a call on every request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_header_bytes: int = MAX_HEADER_BYTES,
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        app = BodyLimitMiddleware(app, max_body_bytes=max_body_bytes, body_timeout_seconds=body_timeout_seconds)
        app = CallerGoneMiddleware(app)
        app = DeadlineMiddleware(app)
        app = HeaderLimitMiddleware(app, max_header_bytes=max_header_bytes)
        app = UnhandledErrorMiddleware(app)
        app = AccessLogMiddleware(app)
        super().__init__(tracing.asgi_app(RequestIdMiddleware(app)))
