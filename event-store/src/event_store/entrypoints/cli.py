"""``event-store [serve|migrate]``: the command docker-compose.yml and the native runner run."""

import argparse

import uvloop

from event_store.bootstrap import migrate, serve
from event_store.config import SERVICE_NAME, Settings
from interchange_common.logging import configure_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=SERVICE_NAME)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    args = parser.parse_args(argv)
    settings = Settings()  # values come from the environment
    configure_logging(service=SERVICE_NAME, level=settings.log_level)
    if settings.migrate_on_start or args.command == "migrate":
        migrate(settings=settings)
    if args.command == "serve":
        uvloop.run(serve(settings=settings))
