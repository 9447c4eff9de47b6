"""CallerGoneMiddleware: when the caller goes away before its answer is complete,
the request's work is cancelled at once, whatever it is awaiting, and nothing is
answered. The layers outside see the scope marked CALLER_GONE (the access log
writes 499)."""

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CALLER_GONE = "interchange.caller_gone"

_log = logging.getLogger("interchange.access")


class _CallerWatch:
    """Reads the request's messages for the app in a task of its own, so that the
    caller going away (``http.disconnect`` before the response is complete) is seen
    at once and cancels the request's task.

    ``with watch:`` around the app: starts the reading task and stops it after."""

    def __init__(self, *, receive: Receive) -> None:
        self._receive = receive
        self._messages: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        self.receive = self._messages.get  # what the app reads, in the order read
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


class CallerGoneMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = _CallerWatch(receive=receive)

        def send_noting_end(message: Message) -> Awaitable[None]:
            if message["type"] != "http.response.start" and not message.get("more_body", False):
                watch.response_complete = True
            return send(message)

        try:
            with watch:
                await self.app(scope, watch.receive, send_noting_end)
        except asyncio.CancelledError:
            if not watch.caller_gone:
                raise
            # Our own cancellation: the caller went away, so its work stopped. Nobody
            # is left to answer; the server expects the app to return.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            scope[CALLER_GONE] = True
