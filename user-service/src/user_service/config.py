"""user-service's settings, from the environment (see docker-compose.yml)."""

from pathlib import Path

from pydantic import Field, SecretStr

from interchange_common.accesstokens import MAX_ACCESS_TOKEN_TTL_SECONDS
from interchange_common.settings import ServiceSettings

SERVICE_NAME = "user-service"


class Settings(ServiceSettings):
    http_port: int = 8001
    grpc_port: int = 50051
    # postgresql+asyncpg://user:password@host:port/database
    database_url: SecretStr
    database_pool_size: int = Field(default=10, ge=1, le=100)
    migrate_on_start: bool = True

    jwt_private_key_file: Path
    # Keys published in the JWKS but never signed with (a JSON list of PEM files): in
    # a rotation, the next key before any instance signs with it, then the old key
    # until the tokens it signed have expired (see adapters/tokens.py).
    jwt_verify_only_key_files: list[Path] = Field(default_factory=list)
    jwt_issuer: str = "interchange"
    jwt_audience: str = "interchange-api"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=MAX_ACCESS_TOKEN_TTL_SECONDS)

    admin_email: str
    admin_password: SecretStr

    # amqp://user:password@host:port/vhost: the outbox relay publishes user events here.
    rabbitmq_url: SecretStr
    events_exchange: str = "interchange.events"
    outbox_relay_enabled: bool = True

    max_body_bytes: int = 64 * 1024

    def _secrets(self) -> dict[str, str]:
        return {**super()._secrets(), "ADMIN_PASSWORD": self.admin_password.get_secret_value()}
