"""``<service> [serve|migrate]``: the one command line every service has.

Settings come from the environment; logging is configured before anything else
runs; ``migrate`` brings the database schema up to date (also before ``serve``
unless the settings say ``migrate_on_start=false``); ``serve`` runs on uvloop,
registered with Consul when CONSUL_HTTP_ADDR is set (interchange_common.lifecycle),
traced when the OTEL_* variables ask for it (interchange_common.tracing).
"""

import argparse
import importlib.metadata
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

from interchange_common import lifecycle, tracing
from interchange_common.logging import configure_logging
from interchange_common.resilience import retrying
from interchange_common.settings import ServiceSettings, consul_agent

S = TypeVar("S", bound=ServiceSettings)


def run_service(
    *,
    name: str,
    load_settings: Callable[[], S],
    serve: Callable[[S], Coroutine[Any, Any, None]],
    migrate: Callable[[S], None] | None = None,
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=name)
    commands = ["serve", "migrate"] if migrate is not None else ["serve"]
    parser.add_argument("command", nargs="?", choices=commands, default="serve")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(service=name, level=settings.log_level)
    if migrate is not None and (args.command == "migrate" or getattr(settings, "migrate_on_start", True)):
        migrate(settings)
    if args.command == "serve":
        tracing.configure_tracing(service=name, version=_version(name))
        try:
            uvloop.run(_serve_in_catalogue(name=name, settings=settings, serve=serve))
        finally:
            tracing.shutdown()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(f"interchange-{name}")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def _serve_in_catalogue(*, name: str, settings: S, serve: Callable[[S], Coroutine[Any, Any, None]]) -> None:
    """Serve, registered with Consul when CONSUL_HTTP_ADDR is set (see lifecycle)."""
    shutdown = lifecycle.Shutdown(drain_seconds=settings.drain_seconds)
    agent = consul_agent(settings.consul_http_addr) if settings.consul_http_addr else None
    if agent is not None:
        shutdown.registration = lifecycle.registration_for(
            agent=agent.agent.service,
            name=name,
            address=settings.service_address,
            port=int(getattr(settings, "http_port", 0)),
            version=_version(name),
            environment=settings.environment,
        )
        # The agent may still be starting (compose starts them together): try for a while.
        async for attempt in retrying(retryable=lambda _: True, attempts=20, within=30.0, maximum=2.0):
            with attempt:
                await shutdown.registration.register()
    lifecycle.install(shutdown)
    try:
        await serve(settings)
    finally:
        if agent is not None:
            if shutdown.registration is not None and not shutdown.draining:
                await shutdown.registration.deregister()
            await agent.close()
