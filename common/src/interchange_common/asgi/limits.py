"""What a request may send, and how slowly.

HeaderLimitMiddleware   431 when the names and values of all request headers
                        together exceed MAX_HEADER_BYTES, before any work starts
BodyLimitMiddleware     413 when the body is over the cap, announced or streamed;
                        408 when it has not all arrived within the body timeout of
                        the request's start (a slow client holds no request for ever)

The request head is the servers' to bound in time: Hypercorn (the gateway) closes a
connection whose head is not complete within its keep-alive timeout. After the body,
waiting is unbounded (an SSE client sends nothing for hours).
"""

import asyncio
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interchange_common.problems import send_problem

# Names and values of all request headers together; past it, 431. The servers' own
# limits are looser (Hypercorn reads 64 KiB at a time, httptools has none).
MAX_HEADER_BYTES = 16 * 1024
# The whole request body must arrive within this time of the request's start.
BODY_TIMEOUT_SECONDS = 30.0

_TOO_LARGE = "request body too large"
# HTTP/1.x says in the head whether a body follows (Content-Length or Transfer-Encoding);
# HTTP/2 ends the stream instead, so its requests are always read through the limits.
_FRAMED_IN_HEAD = ("1.0", "1.1")


class HeaderLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = 0
            for name, value in scope["headers"]:
                size += len(name) + len(value)
            if size > self.max_header_bytes:
                await send_problem(send, status=431, detail="request header fields too large")
                return
        await self.app(scope, receive, send)


async def _dropped() -> None:
    """The rest of the app's own answer to a refused body: not sent."""


class _BodyRefused(Exception):
    """The request body went past the size cap or the body timeout while the app read it."""

    def __init__(self, *, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, body_timeout_seconds: float = BODY_TIMEOUT_SECONDS
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = 0
        framed = False  # the head says a body follows
        for name, value in scope["headers"]:
            if name == b"content-length":
                framed = True
                if value.isdigit():
                    announced = int(value)
            elif name == b"transfer-encoding":
                framed = True
        if announced > self.max_body_bytes:
            await send_problem(send, status=413, detail=_TOO_LARGE)
            return
        if not framed and scope.get("http_version") in _FRAMED_IN_HEAD:
            # No body follows (RFC 9112 6.3): nothing to count or to wait for.
            await self.app(scope, receive, send)
            return
        received = 0
        complete = False
        refused: _BodyRefused | None = None
        answering = False
        body_deadline = asyncio.get_running_loop().time() + self.body_timeout_seconds

        async def receive_limited() -> Message:
            nonlocal received, complete, refused
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                refused = _BodyRefused(
                    status=408, detail=f"the request body did not arrive within {self.body_timeout_seconds:g} s"
                )
                raise refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    refused = _BodyRefused(status=413, detail=_TOO_LARGE)
                    raise refused
            return message

        def send_unless_refused(message: Message) -> Awaitable[None]:
            nonlocal answering
            if refused is None:
                answering = answering or message["type"] == "http.response.start"
                return send(message)
            # FastAPI turns an error while reading the body into its own 400: when the
            # reason was the cap or the timeout, the client gets the answer that says so.
            if message["type"] == "http.response.start":
                answering = True
                return send_problem(send, status=refused.status, detail=refused.detail)
            return _dropped()

        try:
            await self.app(scope, receive_limited, send_unless_refused)
        except _BodyRefused as e:
            if not answering:
                await send_problem(send, status=e.status, detail=e.detail)
