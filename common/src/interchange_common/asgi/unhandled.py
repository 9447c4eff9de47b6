"""UnhandledErrorMiddleware: an exception out of the layers inside becomes a 500
problem (logged with its traceback, never shown), or just the log line when the
answer had already started."""

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from interchange_common.asgi.messages import StartNoted
from interchange_common.problems import send_problem

_log = logging.getLogger("interchange.access")


class UnhandledErrorMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        noted = StartNoted(send)
        try:
            await self.app(scope, receive, noted)
        except Exception:
            _log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if not noted.started:
                await send_problem(send, status=500, detail="internal error")
