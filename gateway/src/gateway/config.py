"""The gateway's settings, from the environment (see docker-compose.yml)."""

from pydantic import Field, SecretStr

from interchange_common.settings import ServiceSettings

SERVICE_NAME = "gateway"


class Settings(ServiceSettings):
    http_port: int = 8080
    # redis://[:password@]host:port/db
    redis_url: SecretStr
    redis_key_prefix: str = "interchange"

    user_service_url: str
    user_service_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    order_service_url: str
    order_service_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    notification_service_url: str
    notification_service_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    jwt_issuer: str = "interchange"
    jwt_audience: str = "interchange-api"

    rate_limit_requests: int = Field(default=600, ge=1)
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    # Register and log in: per client address, much stricter.
    auth_rate_limit_requests: int = Field(default=20, ge=1)
    auth_rate_limit_window_seconds: int = Field(default=60, ge=1)

    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 64 * 1024
    health_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
