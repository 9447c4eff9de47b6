"""The base of every service's one Settings object.

Values come from the environment (docker-compose.yml sets them, the native runner
sets the same). Secrets have no default. Outside development a service refuses to
start when a secret is missing, too short, or one of the development placeholders
that .env.example ships.
"""

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from interchange_common.errors import ConfigurationError

# Anything .env.example ships starts with this: fine on a laptop, refused in production.
DEVELOPMENT_SECRET_PREFIX = "dev-only-"  # noqa: S105  # a marker, not a secret
MIN_SECRET_LENGTH = 32


def check_secret(*, name: str, value: str, environment: str) -> None:
    """Raise ConfigurationError when a secret must not be used in this environment."""
    if environment == "development":
        return
    if value.startswith(DEVELOPMENT_SECRET_PREFIX) or value.lower().startswith("change"):
        raise ConfigurationError(f"{name} holds a development placeholder; set a real secret")
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigurationError(f"{name} must be at least {MIN_SECRET_LENGTH} characters")


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses add their own and keep these names."""

    # hide_input_in_errors: a validation error must not print the values (secrets) it saw.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    environment: Literal["development", "test", "production"] = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    host: str = "0.0.0.0"  # noqa: S104  # services listen on every interface of their container
    # Shared key for service-to-service tokens (HS256); every service holds it.
    service_jwt_secret: SecretStr
    service_token_ttl_seconds: int = Field(default=300, ge=30, le=3600)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> "ServiceSettings":
        for name, value in self._secrets().items():
            try:
                check_secret(name=name, value=value, environment=self.environment)
            except ConfigurationError as e:
                raise ValueError(str(e)) from e  # pydantic reports ValueErrors as validation errors
        return self

    def _secrets(self) -> dict[str, str]:
        """Secret settings by environment variable name; subclasses extend this."""
        return {"SERVICE_JWT_SECRET": self.service_jwt_secret.get_secret_value()}
