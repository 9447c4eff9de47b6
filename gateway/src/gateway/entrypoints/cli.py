"""``gateway [serve]``: the command docker-compose.yml and the native runner run."""

import argparse

import uvloop

from gateway.bootstrap import serve
from gateway.config import SERVICE_NAME, Settings
from interchange_common.logging import configure_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=SERVICE_NAME)
    parser.add_argument("command", nargs="?", choices=["serve"], default="serve")
    parser.parse_args(argv)
    settings = Settings()  # values come from the environment
    configure_logging(service=SERVICE_NAME, level=settings.log_level)
    uvloop.run(serve(settings=settings))
