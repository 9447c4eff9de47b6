"""The gateway's settings, from the environment (see docker-compose.yml)."""

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from interchange_common.accesstokens import MAX_ACCESS_TOKEN_TTL_SECONDS
from interchange_common.discovery import parse_urls
from interchange_common.settings import CallerSettings

SERVICE_NAME = "gateway"


class Settings(CallerSettings):
    # HTTP/1.1 and h2c (HTTP/2 without TLS: prior knowledge or Upgrade).
    http_port: int = 8080
    # TLS with HTTP/2 or HTTP/1.1 by ALPN; served only when both files are set.
    https_port: int = 8443
    # Operations, for this deployment's own tools (Prometheus, health dashboards): the
    # detailed /health and /metrics, which the public ports do not serve. Unset: none.
    ops_port: int | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # redis://[:password@]host:port/db
    redis_url: SecretStr
    redis_key_prefix: str = "interchange"
    # amqp://user:password@host:port/vhost: user events (deleted, suspended) revoke
    # that user's tokens; one queue for all gateway instances.
    rabbitmq_url: SecretStr
    events_exchange: str = "interchange.events"
    events_queue: str = Field(default="gateway", min_length=1, max_length=200)
    # How long a revocation is kept: at least the longest an access token lives. The
    # default outlives any token user-service can issue; set it to user-service's
    # ACCESS_TOKEN_TTL_SECONDS or more.
    revocation_ttl_seconds: int = Field(default=MAX_ACCESS_TOKEN_TTL_SECONDS, ge=60)
    # Redis keeps nothing on disk; user-service keeps every mark. How often each
    # instance asks Redis whether it still holds them (one EXISTS: a restart is seen
    # within this, and all of them go back), and how often its own copy, which decides
    # while Redis does not answer, takes in user-service's new marks (one small read).
    revocation_check_seconds: float = Field(default=1.0, gt=0, le=60)
    revocation_refresh_seconds: float = Field(default=5.0, gt=0, le=300)

    # Each *_SERVICE_URL may list several instances, comma-separated (static discovery).
    # *_MAX_IN_FLIGHT: requests this instance forwards to the service at once (all its
    # instances together; event streams and WebSockets not counted). One more waits up
    # to IN_FLIGHT_WAIT_SECONDS for a slot, then is refused (503, Retry-After: 1)
    # before anything is done for it, rather than queue until every answer is late.
    # Measured on 2 cores (tests/bench/bench_orders.py): 16 orders keep the accepted
    # ones' p99 well under 1 s at twice the rate the stack sustains; 8 already refuses
    # some at that rate. user-service's cheap reads get 32: a client with 32
    # connections (the gateway benchmark's) never waits.
    user_service_url: str
    user_service_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    user_service_max_in_flight: int = Field(default=32, ge=1)
    order_service_url: str
    order_service_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    order_service_max_in_flight: int = Field(default=16, ge=1)
    notification_service_url: str
    notification_service_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    notification_service_max_in_flight: int = Field(default=16, ge=1)
    in_flight_wait_seconds: float = Field(default=0.02, ge=0, le=5)

    jwt_issuer: str = "interchange"
    jwt_audience: str = "interchange-api"

    # When Redis cannot be reached: "open" limits in each instance's memory instead,
    # "closed" refuses requests (503) until it answers again.
    rate_limit_on_redis_failure: Literal["open", "closed"] = "open"
    rate_limit_requests: int = Field(default=600, ge=1)
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    # Register and log in: per client address, much stricter.
    auth_rate_limit_requests: int = Field(default=20, ge=1)
    auth_rate_limit_window_seconds: int = Field(default=60, ge=1)

    # Tickets for EventSource and WebSocket (browsers cannot send Authorization there).
    ticket_ttl_seconds: int = Field(default=30, ge=1, le=300)
    # Pages from these origins (and the gateway's own) may open /ws; JSON list.
    ws_allowed_origins: list[str] = Field(default_factory=list)
    # A live stream whose upstream stays silent this long is ended (heartbeats come sooner).
    live_read_timeout_seconds: float = Field(default=90.0, gt=0)
    # On SIGTERM: live connections end at once, others get this long to finish.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=120)

    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 64 * 1024
    # Slow clients: a request head (and an idle keep-alive connection) gets this long,
    # then the connection is closed; a request body must all arrive within the body
    # timeout of the request's start, or the answer is 408.
    request_head_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    request_body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    health_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    @field_validator("tls_cert_file", "tls_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _tls_needs_both_files(self) -> "Settings":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
        for name in ("user_service_url", "order_service_url", "notification_service_url"):
            if not parse_urls(getattr(self, name)):
                raise ValueError(f"{name.upper()} names no instance")
        return self
