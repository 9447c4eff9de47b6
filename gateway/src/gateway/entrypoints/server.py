"""Serves the gateway's app with Hypercorn inside the gateway's own event loop.

Hypercorn rather than uvicorn: it speaks HTTP/2, both in the clear (h2c, by prior
knowledge or Upgrade) next to HTTP/1.1 on the HTTP port, and over TLS where ALPN
picks h2 or http/1.1.

SIGTERM or SIGINT starts the instance's shutdown (interchange_common.lifecycle:
draining, deregistered, ``DRAIN_SECONDS`` of serving on), then stops accepting, ends
the live connections (their clients reconnect, to another instance if there is one),
gives the other requests up to the grace period and returns, so the caller's shutdown runs to the end. Hypercorn writes
no access log: the ObservabilityMiddleware does, without query strings (tickets
travel there). The client address is the socket's peer: no proxy header is trusted.
"""

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from interchange_common import lifecycle

_log = logging.getLogger(__name__)
# At DEBUG these write out every header they encode or decode: Authorization, and the
# :path with its ticket. Never below WARNING, whatever LOG_LEVEL says.
_HEADER_LOGGERS = ("hpack", "h2")


@dataclass(frozen=True, slots=True)
class Listeners:
    host: str
    http_port: int
    https_port: int
    cert_file: Path | None = None
    key_file: Path | None = None
    ops_port: int | None = None  # the operations app's port (plain HTTP/1.1 and h2c)

    @property
    def tls(self) -> bool:
        return self.cert_file is not None and self.key_file is not None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _config(*, grace_seconds: float, head_timeout_seconds: float) -> Config:
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    config.graceful_timeout = grace_seconds
    # Hypercorn's idle timer runs from a connection's start (and after each answer)
    # until a whole request head has arrived: it bounds a slow client's headers as
    # well as an idle keep-alive connection. The body is bounded by the middleware.
    config.keep_alive_timeout = head_timeout_seconds
    return config


def hypercorn_config(*, listeners: Listeners, grace_seconds: float, head_timeout_seconds: float = 5.0) -> Config:
    config = _config(grace_seconds=grace_seconds, head_timeout_seconds=head_timeout_seconds)
    http = [_address(listeners.host, listeners.http_port)]
    # Without certificate and key Hypercorn serves ``bind`` in the clear and ignores
    # ``insecure_bind``; with them ``bind`` is the TLS listener.
    if listeners.tls:
        config.bind = [_address(listeners.host, listeners.https_port)]
        config.insecure_bind = http
        config.certfile = str(listeners.cert_file)
        config.keyfile = str(listeners.key_file)
        config.alpn_protocols = ["h2", "http/1.1"]
    else:
        config.bind = http
    config.websocket_ping_interval = 20.0
    return config


def _operations_config(*, host: str, port: int, head_timeout_seconds: float) -> Config:
    config = _config(grace_seconds=1.0, head_timeout_seconds=head_timeout_seconds)
    config.bind = [_address(host, port)]
    return config


async def serve_http(
    *,
    app: Any,
    listeners: Listeners,
    grace_seconds: float,
    on_shutdown: Callable[[], None],
    stop: asyncio.Event | None = None,
    head_timeout_seconds: float = 5.0,
    operations: Any = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or ``stop`` is set), call ``on_shutdown``, drain
    and return. A test passes ``stop`` and leaves the process's signals alone.

    With ``operations`` (an app) and ``listeners.ops_port``, that app is served on the
    operations port too, from start to the end of the drain (its /health says
    "draining" meanwhile); a failure to bind either stops both."""
    for name in _HEADER_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).getEffectiveLevel()))
    config = hypercorn_config(
        listeners=listeners, grace_seconds=grace_seconds, head_timeout_seconds=head_timeout_seconds
    )
    stopping = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if stop is None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)

    async def shutdown_trigger() -> None:
        await stopping.wait()
        await lifecycle.current().begin()
        _log.info("shutting down", extra={"grace_seconds": grace_seconds})
        on_shutdown()

    _log.info(
        "serving",
        extra={
            "http_port": listeners.http_port,
            "https_port": listeners.https_port if listeners.tls else None,
            "tls": listeners.tls,
        },
    )
    if not listeners.tls:
        _log.info("no TLS listener: TLS_CERT_FILE and TLS_KEY_FILE are not set")
    served = asyncio.Event()

    async def public() -> None:
        try:
            await serve(app, config, shutdown_trigger=shutdown_trigger, mode="asgi")
        finally:
            served.set()

    async def public_served() -> None:
        await served.wait()

    try:
        if operations is None or listeners.ops_port is None:
            await public()
        else:
            _log.info("serving operations", extra={"ops_port": listeners.ops_port})
            ops_config = _operations_config(
                host=listeners.host, port=listeners.ops_port, head_timeout_seconds=head_timeout_seconds
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(public())
                group.create_task(serve(operations, ops_config, shutdown_trigger=public_served, mode="asgi"))
    finally:
        if stop is None:
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)
