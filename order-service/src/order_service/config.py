"""order-service's settings, from the environment (see docker-compose.yml)."""

from pydantic import Field, SecretStr

from interchange_common.rpc import GrpcUrl
from interchange_common.settings import CallerSettings

SERVICE_NAME = "order-service"


class Settings(CallerSettings):
    http_port: int = 8002
    # postgresql+asyncpg://user:password@host:port/database: the read model and keys.
    database_url: SecretStr
    database_pool_size: int = Field(default=10, ge=1, le=100)
    migrate_on_start: bool = True

    # gRPC addresses, as grpc://host:port: the event store (the orders) and
    # user-service (the user check).
    event_store_url: GrpcUrl
    user_service_url: GrpcUrl
    event_store_deadline_seconds: float = Field(default=2.0, gt=0, le=30)
    user_service_deadline_seconds: float = Field(default=1.0, gt=0, le=30)

    idempotency_key_ttl_seconds: int = Field(default=86_400, ge=60)
    snapshot_every: int = Field(default=50, ge=2)
    projection_enabled: bool = True

    max_body_bytes: int = 256 * 1024
