"""CloseWhenDrainingMiddleware: while the instance drains (interchange_common.lifecycle),
HTTP/1.x answers say ``Connection: close``, so that callers retire the connection
after the answer instead of sending their next request to an instance that is going.
HTTP/2 has no Connection header (the server sends GOAWAY)."""

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interchange_common import lifecycle

_CLOSABLE_VERSIONS = ("1.0", "1.1")
_CONNECTION_CLOSE = (b"connection", b"close")


class CloseWhenDrainingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("http_version") not in _CLOSABLE_VERSIONS:
            await self.app(scope, receive, send)
            return

        def send_closing(message: Message) -> Awaitable[None]:
            # Asked when the answer starts: draining may begin while the request runs.
            if message["type"] == "http.response.start" and lifecycle.current().draining:
                message["headers"] = [*message.get("headers", ()), _CONNECTION_CLOSE]
            return send(message)

        await self.app(scope, receive, send_closing)
