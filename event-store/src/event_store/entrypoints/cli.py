"""``event-store [serve|migrate]``: the command docker-compose.yml and the native runner run."""

from event_store.bootstrap import migrate, serve
from event_store.config import SERVICE_NAME, Settings
from interchange_common.cli import run_service


def main(argv: list[str] | None = None) -> None:
    run_service(
        name=SERVICE_NAME,
        load_settings=Settings,
        serve=lambda settings: serve(settings=settings),
        migrate=lambda settings: migrate(settings=settings),
        argv=argv,
    )
