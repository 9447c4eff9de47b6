"""Settings from the environment: defaults, the retry delays, and the development-only switch."""

import pytest
from pydantic import ValidationError

from notification_service.config import Settings

REQUIRED = {
    "SERVICE_JWT_SECRET": "dev-only-service-jwt-secret",
    "DATABASE_URL": "postgresql+asyncpg://u:p@127.0.0.1:5432/interchange_notifications",
    "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def make(monkeypatch, **env):
    for key, value in {**REQUIRED, "ENVIRONMENT": "development", **env}.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_defaults(monkeypatch):
    settings = make(monkeypatch)
    assert settings.http_port == 8003
    assert (settings.events_exchange, settings.events_queue) == ("interchange.events", "notification-service")
    assert settings.retry_delays == (1.0, 5.0, 30.0)
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 1025)
    assert settings.mail_from == "Interchange <no-reply@interchange.local>"
    assert settings.migrate_on_start is True
    assert settings.crash_after_commit_before_ack is False
    assert settings.redis_key_prefix == "interchange"
    assert (settings.live_history_max_length, settings.live_history_max_age_seconds) == (1000, 86_400)
    assert settings.sse_heartbeat_seconds == 15
    assert (settings.ws_max_message_bytes, settings.ws_max_rooms, settings.ws_max_sockets_per_user) == (4096, 20, 5)
    assert settings.ws_idle_seconds == 120


@pytest.mark.parametrize(("raw", "delays"), [("0.2, 0.4,0.8", (0.2, 0.4, 0.8)), ("3", (3.0,)), ("", ())])
def test_retry_delays_are_comma_separated_seconds(monkeypatch, raw, delays):
    assert make(monkeypatch, RETRY_DELAYS=raw).retry_delays == delays


@pytest.mark.parametrize("raw", ["1,x", "0", "-1", ",".join(["1"] * 11)])
def test_bad_retry_delays_are_refused(monkeypatch, raw):
    with pytest.raises(ValidationError, match="retry_delays"):
        make(monkeypatch, RETRY_DELAYS=raw)


def test_an_smtp_url_wins_over_host_and_port(monkeypatch):
    assert make(monkeypatch).smtp_address == ("127.0.0.1", 1025)
    settings = make(monkeypatch, SMTP_URL="smtp://mailpit:1025", SMTP_HOST="ignored", SMTP_PORT="2")
    assert settings.smtp_address == ("mailpit", 1025)
    assert make(monkeypatch, SMTP_URL="smtp://127.0.0.1:2525").smtp_address == ("127.0.0.1", 2525)


@pytest.mark.parametrize("url", ["http://mailpit:1025", "smtp://:1025", "smtp://mailpit:x", "smtp://h:1/path"])
def test_bad_smtp_urls_are_refused(monkeypatch, url):
    with pytest.raises(ValidationError, match="SMTP_URL"):
        make(monkeypatch, SMTP_URL=url)


def test_mail_from_must_be_an_address(monkeypatch):
    with pytest.raises(ValidationError, match="MAIL_FROM"):
        make(monkeypatch, MAIL_FROM="Interchange")


def test_the_crash_switch_is_refused_outside_development(monkeypatch):
    secret = "a-real-secret-that-is-long-enough-0123456789"
    assert make(monkeypatch, CRASH_AFTER_COMMIT_BEFORE_ACK="true").crash_after_commit_before_ack
    for environment in ("test", "production"):
        with pytest.raises(ValidationError, match="CRASH_AFTER_COMMIT_BEFORE_ACK"):
            make(monkeypatch, ENVIRONMENT=environment, SERVICE_JWT_SECRET=secret, CRASH_AFTER_COMMIT_BEFORE_ACK="1")
    off = make(monkeypatch, ENVIRONMENT="production", SERVICE_JWT_SECRET=secret, CRASH_AFTER_COMMIT_BEFORE_ACK="false")
    assert not off.crash_after_commit_before_ack


def test_the_database_broker_and_redis_urls_have_no_default(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("RABBITMQ_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("SERVICE_JWT_SECRET", "dev-only-x")
    monkeypatch.setenv("ENVIRONMENT", "development")
    with pytest.raises(ValidationError, match="database_url") as raised:
        Settings()
    assert "rabbitmq_url" in str(raised.value)
    assert "redis_url" in str(raised.value)


@pytest.mark.parametrize("prefix", ["", "has space", "a{b}", "x" * 101])
def test_a_bad_redis_key_prefix_is_refused(monkeypatch, prefix):
    with pytest.raises(ValidationError, match="redis_key_prefix"):
        make(monkeypatch, REDIS_KEY_PREFIX=prefix)
