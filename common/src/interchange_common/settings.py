"""The base of every service's one Settings object.

Values come from the environment (docker-compose.yml sets them, the native runner
sets the same) or, for what the environment leaves unset, from files in /run/secrets
named after the setting (Swarm secrets: the stack mounts DATABASE_URL's value as
/run/secrets/database_url). Secrets have no default. Outside development a service refuses to
start when a secret is missing, too short, or one of the development placeholders
that .env.example ships.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import consul.aio
import dns.asyncresolver
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from interchange_common.balancing import Balancer
from interchange_common.discovery import (
    ConsulDiscovery,
    Discovery,
    DnsAddressDiscovery,
    DnsSrvDiscovery,
    StaticDiscovery,
)
from interchange_common.errors import ConfigurationError
from interchange_common.resilience import CircuitBreaker, RetryBudget

# Anything .env.example ships starts with this: fine on a laptop, refused in production.
DEVELOPMENT_SECRET_PREFIX = "dev-only-"  # noqa: S105  # a marker, not a secret
MIN_SECRET_LENGTH = 32
# Docker and Swarm secrets: a file named after a setting (database_url) is its value,
# where the environment does not set it. Read only where the folder exists.
SECRETS_DIR = Path("/run/secrets")


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
    model_config = SettingsConfigDict(
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        secrets_dir=SECRETS_DIR if SECRETS_DIR.is_dir() else None,
    )

    environment: Literal["development", "test", "production"] = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    host: str = "0.0.0.0"  # noqa: S104  # services listen on every interface of their container
    # Shared key for service-to-service tokens (HS256); every service holds it.
    service_jwt_secret: SecretStr
    service_token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    # A Consul agent (host:port): when set, the instance registers itself at start-up
    # and deregisters first when told to stop. SERVICE_ADDRESS is where others reach
    # it (default: the host name, which compose's network resolves).
    consul_http_addr: str = ""
    service_address: str = ""
    # On SIGTERM/SIGINT: answer and drain for this long (health 503, Connection:
    # close) before the listener closes, so callers move elsewhere without errors.
    drain_seconds: float = Field(default=2.0, ge=0, le=60)

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


def consul_agent(address: str) -> consul.aio.Consul:
    """A client of the Consul agent at ``host:port`` (an http:// prefix is allowed)."""
    host, _, port = address.removeprefix("http://").partition(":")
    return consul.aio.Consul(host=host, port=int(port or 8500))


class CallerSettings(ServiceSettings):
    """Settings of a service that calls others synchronously: how it finds their
    instances, and one balancer, circuit breaker and retry budget per upstream, all
    made with these numbers."""

    # Open after this many failed calls in a row, for this long; then let this many
    # probes through at once, whose success closes it.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=10.0, gt=0, le=600)
    breaker_half_open_probes: int = Field(default=1, ge=1, le=100)
    # Retries may add this share of the calls made, plus this many per second.
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_min_per_second: float = Field(default=1.0, ge=0)

    # Where instances are found: "static" (the *_URL settings list them), "consul"
    # (its health API at CONSUL_HTTP_ADDR), "dns" (SRV at CONSUL_DNS_ADDR) or "tasks"
    # (the *_URL hosts name every instance: Swarm's tasks.<service>, a Kubernetes
    # headless Service; resolved again every second).
    discovery: Literal["static", "consul", "dns", "tasks"] = "static"
    consul_dns_addr: str = "127.0.0.1:8600"
    # An instance failing this many calls in a row is passed over for this long
    # (longer each time in a row, up to the maximum).
    outlier_failures: int = Field(default=3, ge=1)
    outlier_eject_seconds: float = Field(default=5.0, gt=0, le=300)
    outlier_max_eject_seconds: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _consul_discovery_needs_an_agent(self) -> "CallerSettings":
        if self.discovery == "consul" and not self.consul_http_addr:
            raise ValueError("DISCOVERY=consul needs CONSUL_HTTP_ADDR")
        return self

    def make_discovery(self, *, static_urls: Mapping[str, Sequence[str]]) -> Discovery:
        if self.discovery == "static":
            return StaticDiscovery(urls=static_urls)
        if self.discovery == "consul":
            agent = consul_agent(self.consul_http_addr)
            return ConsulDiscovery(health=agent.health, close=agent.close)
        if self.discovery == "tasks":
            return DnsAddressDiscovery(urls=static_urls)
        host, _, port = self.consul_dns_addr.partition(":")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = int(port or 8600)
        return DnsSrvDiscovery(resolver=resolver)

    def balancer(self, *, service: str, discovery: Discovery) -> Balancer:
        return Balancer(
            service=service,
            discovery=discovery,
            failures_to_eject=self.outlier_failures,
            eject_seconds=self.outlier_eject_seconds,
            max_eject_seconds=self.outlier_max_eject_seconds,
        )

    def breaker(self, *, upstream: str) -> CircuitBreaker:
        return CircuitBreaker(
            name=upstream,
            failures_to_open=self.breaker_failures,
            open_seconds=self.breaker_open_seconds,
            half_open_probes=self.breaker_half_open_probes,
        )

    def retry_budget(self, *, upstream: str) -> RetryBudget:
        return RetryBudget(
            name=upstream, ratio=self.retry_budget_ratio, min_per_second=self.retry_budget_min_per_second
        )
