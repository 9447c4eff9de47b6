"""RequestIdMiddleware: the caller's X-Request-ID (or a new one) for the request's
logs, problems and outgoing calls, echoed on the answer."""

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interchange_common.asgi.messages import header
from interchange_common.requestctx import REQUEST_ID_HEADER, accept_request_id, request_id_var

_HEADER = REQUEST_ID_HEADER.encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(offered=header(scope, _HEADER))
        echoed = (_HEADER, request_id.encode())

        def send_with_id(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                # A new list: the app's may be a Response's own, sent again next time.
                message["headers"] = [*message.get("headers", ()), echoed]
            return send(message)

        reset = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(reset)
