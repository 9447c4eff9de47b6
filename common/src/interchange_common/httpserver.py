"""Serves an ASGI app with uvicorn inside the service's own event loop.

uvicorn drains connections on SIGTERM/SIGINT, then re-raises the signal, which
would end the process before the service closes its gRPC server, pools and
registrations. Here the signal starts the instance's shutdown (lifecycle.Shutdown:
draining, deregistered, ``drain_seconds`` of serving on), then the server stops
accepting, finishes what is in flight, and ``serve_http`` returns, so the caller's
shutdown runs to the end. A second Ctrl-C stops at once.

Long-lived responses (Server-Sent Events) never finish by themselves, so uvicorn's
drain would wait its full grace period for them: ``on_exit`` is called when the
drain ends, for the service to end them (their clients reconnect elsewhere).
"""

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from interchange_common import lifecycle

_log = logging.getLogger("interchange.http")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._stop_requested = False
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # In the signal handler: only note it; the next tick starts the drain.
        if self._stop_requested and sig == signal.SIGINT:
            self.should_exit = self.force_exit = True  # a second Ctrl-C: stop now
        self._stop_requested = True

    async def on_tick(self, counter: int) -> bool:
        if self._stop_requested and self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await super().on_tick(counter)

    async def _drain(self) -> None:
        try:
            await lifecycle.current().begin()
            if self._on_exit is not None:
                self._on_exit()
        except Exception:
            _log.exception("draining failed; stopping now")
        finally:
            self.should_exit = True  # whatever happened above, the server stops


async def serve_http(
    *,
    app: Any,
    host: str,
    port: int,
    ws_max_size: int | None = None,
    ws_compression: bool = True,
    on_exit: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return. ``ws_max_size`` caps a
    WebSocket message in bytes (uvicorn closes with 1009 above it); without
    ``ws_compression`` a WebSocket client's offer of permessage-deflate is declined."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
        # Never take the client address from X-Forwarded-For: uvicorn would trust it from
        # loopback by default, and per-address rate limits would be the caller's choice.
        proxy_headers=False,
        ws_per_message_deflate=ws_compression,
    )
    if ws_max_size is not None:
        config.ws_max_size = ws_max_size
    await _Server(config, on_exit=on_exit).serve()
