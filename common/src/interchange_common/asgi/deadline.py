"""DeadlineMiddleware: the caller's deadline (``X-Request-Timeout-Ms``, see
interchange_common.deadlines) bounds the work the request starts, here and in every
call it makes; when it passes first, the answer is 504."""

import asyncio
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        seconds: float | None = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                seconds = parse_timeout(value.decode("latin-1"))
        if seconds is None:
            await self.app(scope, receive, send)
            return
        answering = False

        def send_noting_start(message: Message) -> Awaitable[None]:
            nonlocal answering
            if message["type"] == "http.response.start":
                answering = True
            return send(message)

        within = asyncio.timeout(seconds)
        try:
            with deadline_in(seconds):
                async with within:
                    await self.app(scope, receive, send_noting_start)
        except TimeoutError:
            if not within.expired():
                raise  # somebody else's timeout: an error like any other
            if not answering:
                await send_problem(send, status=504, detail="the caller's deadline passed")
