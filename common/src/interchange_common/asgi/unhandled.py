"""UnhandledErrorMiddleware: an exception out of the layers inside becomes a 500
problem (logged with its traceback, never shown), or just the log line when the
answer had already started."""

import logging
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interchange_common.problems import send_problem

_log = logging.getLogger("interchange.access")


class UnhandledErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answering = False

        def send_noting_start(message: Message) -> Awaitable[None]:
            nonlocal answering
            if message["type"] == "http.response.start":
                answering = True
            return send(message)

        try:
            await self.app(scope, receive, send_noting_start)
        except Exception:
            _log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if not answering:
                await send_problem(send, status=500, detail="internal error")
