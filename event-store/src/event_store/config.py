"""event-store's settings, from the environment (see docker-compose.yml)."""

from pydantic import Field, SecretStr

from interchange_common.settings import ServiceSettings

SERVICE_NAME = "event-store"


class Settings(ServiceSettings):
    http_port: int = 8004
    grpc_port: int = 50054
    # postgresql+asyncpg://user:password@host:port/database
    database_url: SecretStr
    database_pool_size: int = Field(default=20, ge=2, le=200)
    migrate_on_start: bool = True

    # amqp://user:password@host:port/vhost
    rabbitmq_url: SecretStr
    events_exchange: str = "interchange.events"
    relay_enabled: bool = True
    relay_batch: int = Field(default=500, ge=1, le=10_000)

    # A batch of up to 1000 events of up to 64 KiB each would be 64 MiB: the body cap
    # keeps a single append's memory reasonable; large imports send several appends.
    max_body_bytes: int = 4 * 1024 * 1024

    @property
    def asyncpg_dsn(self) -> str:
        """The same database, as asyncpg spells its URL."""
        return self.database_url.get_secret_value().replace("postgresql+asyncpg://", "postgresql://", 1)
