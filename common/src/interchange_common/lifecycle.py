"""A service instance's life in the catalogue: registered at start-up, and on SIGTERM
or SIGINT gone from it before it stops serving, so that no caller is sent to an
instance that has closed its door.

The order on a stop signal (``Shutdown.begin``, run by the HTTP servers):
1. draining: ``/health`` answers 503 "draining" and HTTP/1.1 answers carry
   ``Connection: close``, so callers retire their kept-alive connections while
   their requests still succeed;
2. deregistered from Consul (when the instance registered), so discovery drops it;
3. ``drain_seconds`` later the server stops accepting, finishes the requests in
   flight and returns; the service's own shutdown runs after that.

One per process (signals are per process): ``install`` at start-up, ``current`` where
the servers, the health route and the HTTP middleware need it.
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from interchange_common.discovery import ConsulAgent, ConsulRegistration, Registration

_log = logging.getLogger("interchange.lifecycle")


@dataclass
class Shutdown:
    registration: ConsulRegistration | None = None
    drain_seconds: float = 0.0
    draining: bool = False
    # Also told at step 1 (a gRPC server's health service turns NOT_SERVING).
    on_drain: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def begin(self) -> None:
        """Steps 1 and 2, then wait out the drain; safe to call more than once."""
        if self.draining:
            return
        self.draining = True
        _log.info("draining", extra={"drain_seconds": self.drain_seconds})
        for hook in self.on_drain:
            try:
                await hook()
            except Exception:
                _log.exception("a drain hook failed")
        if self.registration is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self.registration.deregister()
            except Exception as e:
                # Consul drops the instance anyway once its check fails for long enough.
                _log.warning("deregistration failed", extra={"error": type(e).__name__})
        await asyncio.sleep(self.drain_seconds)


_current = Shutdown()


def install(shutdown: Shutdown) -> None:
    global _current
    _current = shutdown


def current() -> Shutdown:
    return _current


def registration_for(
    *,
    agent: ConsulAgent,
    name: str,
    address: str,
    port: int,
    version: str,
    environment: str,
) -> ConsulRegistration:
    """This instance as Consul should know it: an id unique per instance (name,
    address and port), version and environment tags, and its /health as the check."""
    address = address or socket.gethostname()
    return ConsulRegistration(
        agent=agent,
        registration=Registration(
            service_id=f"{name}-{address}-{port}",
            name=name,
            address=address,
            port=port,
            tags=(f"version={version}", f"environment={environment}"),
            check_url=f"http://{address}:{port}/health",
        ),
    )
