"""DeadlineMiddleware: the caller's deadline (``X-Request-Timeout-Ms``, see
interchange_common.deadlines) bounds the work the request starts, here and in every
call it makes; when it passes first, the answer is 504."""

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from interchange_common.asgi.messages import StartNoted, header
from interchange_common.deadlines import DEADLINE_HEADER, deadline_in, parse_timeout
from interchange_common.problems import send_problem

_HEADER = DEADLINE_HEADER.encode()


class DeadlineMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = header(scope, _HEADER)
        seconds = None if offered is None else parse_timeout(offered)
        if seconds is None:
            await self.app(scope, receive, send)
            return
        noted = StartNoted(send)
        within = asyncio.timeout(seconds)
        try:
            with deadline_in(seconds):
                async with within:
                    await self.app(scope, receive, noted)
        except TimeoutError:
            if not within.expired():
                raise  # somebody else's timeout: an error like any other
            if not noted.started:
                await send_problem(send, status=504, detail="the caller's deadline passed")
