"""``notification-service [serve|migrate]``: the command docker-compose.yml and the native runner run."""

from interchange_common.cli import run_service
from notification_service.bootstrap import migrate, serve
from notification_service.config import SERVICE_NAME, Settings


def main(argv: list[str] | None = None) -> None:
    run_service(
        name=SERVICE_NAME,
        load_settings=Settings,
        serve=lambda settings: serve(settings=settings),
        migrate=lambda settings: migrate(settings=settings),
        argv=argv,
    )
