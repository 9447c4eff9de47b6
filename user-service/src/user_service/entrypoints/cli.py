"""``user-service [serve|migrate]``: the command docker-compose.yml and the native runner run."""

import argparse

import uvloop

from interchange_common.logging import configure_logging
from user_service.bootstrap import migrate, serve
from user_service.config import SERVICE_NAME, Settings


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
