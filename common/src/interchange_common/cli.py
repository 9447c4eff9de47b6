"""``<service> [serve|migrate]``: the one command line every service has.

Settings come from the environment; logging is configured before anything else
runs; ``migrate`` brings the database schema up to date (also before ``serve``
unless the settings say ``migrate_on_start=false``); ``serve`` runs on uvloop.
"""

import argparse
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

from interchange_common.logging import configure_logging
from interchange_common.settings import ServiceSettings

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
        uvloop.run(serve(settings))
