"""Serves an ASGI app with uvicorn inside the service's own event loop.

uvicorn drains connections on SIGTERM/SIGINT, then re-raises the signal, which
would end the process before the service closes its gRPC server, pools and
registrations. Here the signal only stops serving; ``serve_http`` returns and the
caller's shutdown runs to the end.

Long-lived responses (Server-Sent Events) never finish by themselves, so uvicorn's
drain would wait its full grace period for them: ``on_exit`` hears of the signal at
once, for the service to end them (it runs inside the signal handler: it must only
schedule work, e.g. with ``loop.call_soon_threadsafe``).
"""

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
        else:
            self.should_exit = True
            if self._on_exit is not None:
                self._on_exit()


async def serve_http(
    *,
    app: Any,
    host: str,
    port: int,
    ws_max_size: int | None = None,
    on_exit: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return. ``ws_max_size`` caps a
    WebSocket message in bytes (uvicorn closes with 1009 above it)."""
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
    )
    if ws_max_size is not None:
        config.ws_max_size = ws_max_size
    await _Server(config, on_exit=on_exit).serve()
