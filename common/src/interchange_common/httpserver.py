"""Serves an ASGI app with uvicorn inside the service's own event loop.

uvicorn drains connections on SIGTERM/SIGINT, then re-raises the signal, which
would end the process before the service closes its gRPC server, pools and
registrations. Here the signal only stops serving; ``serve_http`` returns and the
caller's shutdown runs to the end.
"""

import signal
from types import FrameType
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for open connections
        else:
            self.should_exit = True


async def serve_http(*, app: Any, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
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
    await _Server(config).serve()
