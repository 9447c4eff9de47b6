"""``gateway [serve]``: the command docker-compose.yml and the native runner run."""

from gateway.bootstrap import serve
from gateway.config import SERVICE_NAME, Settings
from interchange_common.cli import run_service


def main(argv: list[str] | None = None) -> None:
    run_service(name=SERVICE_NAME, load_settings=Settings, serve=lambda settings: serve(settings=settings), argv=argv)
