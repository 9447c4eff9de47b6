"""notification-service's settings, from the environment (see docker-compose.yml)."""

import email.utils
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from interchange_common.rpc import GrpcUrl
from interchange_common.settings import CallerSettings

SERVICE_NAME = "notification-service"
MAX_RETRIES = 10


def _smtp_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port or 25
    except ValueError as e:
        raise ValueError("SMTP_URL has a bad port") from e
    if parts.scheme != "smtp" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError("SMTP_URL must look like smtp://host:port")
    return parts.hostname, port


class Settings(CallerSettings):
    http_port: int = 8003
    # The TCP feed (docs/api.md "Raw protocols"): newline-delimited JSON for terminals.
    tcp_port: int = 9000
    tcp_max_line_bytes: int = Field(default=16 * 1024, ge=256, le=1024 * 1024)
    # The UDP feed: one JSON object per datagram.
    udp_port: int = 9001
    udp_max_datagram_bytes: int = Field(default=8 * 1024, ge=256, le=65_507)
    # Users sign in to the feeds with their access tokens, checked against these keys:
    # one URL per user-service instance, comma-separated, asked in turn until one
    # answers. Unset: nobody can sign in (the feeds still greet and echo).
    jwks_url: str | None = None
    jwt_issuer: str = "interchange"
    jwt_audience: str = "interchange-api"
    # postgresql+asyncpg://user:password@host:port/interchange_notifications
    database_url: SecretStr
    database_pool_size: int = Field(default=10, ge=1, le=100)
    migrate_on_start: bool = True

    # amqp://user:password@host:port/vhost
    rabbitmq_url: SecretStr
    events_exchange: str = "interchange.events"
    # The consumer's durable queue; <queue>.retry.N and <queue>.dead are named after it.
    events_queue: str = Field(default="notification-service", min_length=1, max_length=200)
    # Seconds before attempts 2, 3, …: "1,5,30" (each varies by ±20%). After the last,
    # a failing message goes to the dead-letter queue.
    retry_delays: Annotated[tuple[float, ...], NoDecode] = (1.0, 5.0, 30.0)
    consumer_prefetch: int = Field(default=20, ge=1, le=1000)

    # gRPC address of user-service, grpc://host:port: an order whose user is not known
    # yet is looked up there. Unset: such an order waits (retries) for user.created.
    user_service_url: GrpcUrl | None = None
    user_service_deadline_seconds: float = Field(default=1.0, gt=0, le=30)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    # smtp://host:port, the form compose uses (the native runner rewrites it to its
    # local sink like any other URL); when set it wins over SMTP_HOST and SMTP_PORT.
    smtp_url: str | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    smtp_starttls: bool = False
    mail_from: str = "Interchange <no-reply@interchange.local>"

    # Live push (SSE /internal/events, WebSocket /internal/ws, the TCP feed), fanned out
    # between instances through Redis: redis://host:port/db.
    redis_url: SecretStr
    # Every key and channel the service uses starts with "<prefix>:" (tests set one per run).
    redis_key_prefix: str = Field(default="interchange", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    # A user's notification history (the SSE resume window) keeps at most this many
    # entries, none older than this.
    live_history_max_length: int = Field(default=1000, ge=10, le=1_000_000)
    live_history_max_age_seconds: int = Field(default=86_400, ge=60, le=365 * 86_400)
    # The live outbox is pushed right after each commit; this poll is the safety net.
    live_outbox_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0, le=3600)
    # Messages waiting for one live client (SSE, WebSocket, TCP); a client that lets
    # more pile up is too slow and is dropped.
    live_queue_size: int = Field(default=256, ge=8, le=100_000)
    ws_max_message_bytes: int = Field(default=4096, ge=256, le=1024 * 1024)
    ws_max_rooms: int = Field(default=20, ge=1, le=1000)
    ws_max_sockets_per_user: int = Field(default=5, ge=1, le=1000)
    # Server-Sent Event streams one user may hold at once, across instances.
    sse_max_streams_per_user: int = Field(default=5, ge=1, le=1000)
    # A socket that sends nothing (clients send {"type":"ping"}) for this long is closed.
    ws_idle_seconds: float = Field(default=120.0, gt=0, le=86_400)

    max_body_bytes: int = 64 * 1024
    # Handled message ids, and mails sent or given up, are forgotten after this long.
    retention_days: int = Field(default=7, ge=1, le=3650)

    # Fault injection for the tests (development only): after a message's effect that
    # queued a mail has committed, and before the ack, the process SIGKILLs itself.
    crash_after_commit_before_ack: bool = False

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_delays")
    @classmethod
    def _sensible_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) > MAX_RETRIES or any(not 0 < delay <= 86_400 for delay in value):
            raise ValueError(f"RETRY_DELAYS takes up to {MAX_RETRIES} delays of more than 0 and at most 86400 s")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _an_smtp_url(cls, value: str | None) -> str | None:
        if value is not None:
            _smtp_address(value)
        return value

    @property
    def smtp_address(self) -> tuple[str, int]:
        """Where the SMTP server listens: SMTP_URL when given, else SMTP_HOST and SMTP_PORT."""
        return _smtp_address(self.smtp_url) if self.smtp_url else (self.smtp_host, self.smtp_port)

    @field_validator("mail_from")
    @classmethod
    def _an_address(cls, value: str) -> str:
        _, address = email.utils.parseaddr(value)
        if "@" not in address:
            raise ValueError("MAIL_FROM must be an address, e.g. 'Interchange <no-reply@example.com>'")
        return value

    @model_validator(mode="after")
    def _fault_injection_in_development_only(self) -> "Settings":
        if self.crash_after_commit_before_ack and self.environment != "development":
            raise ValueError("CRASH_AFTER_COMMIT_BEFORE_ACK is a test switch: refused outside ENVIRONMENT=development")
        return self
