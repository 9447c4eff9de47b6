"""The small rules of live connections: origins, close codes, ending them all, the
Hypercorn listeners, and the settings that feed them."""

import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.domain.model import origin_allowed
from gateway.entrypoints.passthrough import LiveConnections, _passable
from gateway.entrypoints.server import Listeners, hypercorn_config

ALLOWED = frozenset({"https://app.example.com"})


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed"),
    [
        (None, "gw:8080", False, True),
        ("https://app.example.com", "gw:8080", False, True),
        ("http://gw:8080", "gw:8080", False, True),
        ("http://GW:8080", "gw:8080", False, True),
        ("https://gw:8443", "gw:8443", True, True),
        ("http://gw:8443", "gw:8443", True, False),
        ("https://gw:8080", "gw:8080", False, False),
        ("https://evil.example.com", "gw:8080", False, False),
        ("https://app.example.com.evil.com", "gw:8080", False, False),
        ("null", "gw:8080", False, False),
        ("http://gw:8080", None, False, False),
    ],
)
def test_origins(origin, host, secure, allowed):
    assert origin_allowed(origin=origin, host=host, secure=secure, allowed=ALLOWED) is allowed


@pytest.mark.parametrize(
    ("code", "sent"),
    [(1000, 1000), (1001, 1001), (1008, 1008), (1012, 1012), (4001, 4001), (3000, 3000), (1005, 1000), (1006, 1000)],
)
def test_close_codes_that_may_be_passed_on(code, sent):
    assert _passable(code) == sent


def test_none_is_a_normal_close():
    assert _passable(None) == 1000


def test_ending_all_ends_the_open_connections_and_any_that_open_later():
    live = LiveConnections()
    ended = []
    with live.track(kind="ws", end=lambda: ended.append("first")):
        live.end_all()
    assert ended == ["first"]
    with live.track(kind="sse", end=lambda: ended.append("late")):
        pass
    assert ended == ["first", "late"]


def test_a_closed_connection_is_not_ended_again():
    live = LiveConnections()
    ended = []
    with live.track(kind="ws", end=lambda: ended.append("gone")):
        pass
    live.end_all()
    assert ended == []


def test_without_tls_the_http_port_is_the_only_listener():
    config = hypercorn_config(listeners=Listeners(host="127.0.0.1", http_port=8080, https_port=8443), grace_seconds=10)
    assert config.bind == ["127.0.0.1:8080"]
    assert not config.ssl_enabled
    assert config.accesslog is None
    assert config.include_server_header is False
    assert config.graceful_timeout == 10


def test_with_tls_both_listen(tmp_path):
    listeners = Listeners(
        host="::", http_port=8080, https_port=8443, cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem"
    )
    config = hypercorn_config(listeners=listeners, grace_seconds=10)
    assert config.bind == ["[::]:8443"]
    assert config.insecure_bind == ["[::]:8080"]
    assert config.alpn_protocols == ["h2", "http/1.1"]


ENV = {
    "SERVICE_JWT_SECRET": "s" * 40,
    "REDIS_URL": "redis://localhost:6379/0",
    "RABBITMQ_URL": "amqp://guest:guest@localhost:5672/",
    "USER_SERVICE_URL": "http://users:8001",
    "ORDER_SERVICE_URL": "http://orders:8002",
    "NOTIFICATION_SERVICE_URL": "http://n1:8003,http://n2:8003",
    "ENVIRONMENT": "test",
}


def settings(monkeypatch, **extra):
    for name, value in {**ENV, **extra}.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_tls_is_off_unless_both_files_are_set(monkeypatch):
    assert settings(monkeypatch).tls_cert_file is None
    assert settings(monkeypatch, TLS_CERT_FILE="", TLS_KEY_FILE="").tls_key_file is None
    with pytest.raises(ValidationError, match="both"):
        settings(monkeypatch, TLS_CERT_FILE="/run/secrets/tls_cert")


def test_live_settings_from_the_environment(monkeypatch):
    loaded = settings(monkeypatch, WS_ALLOWED_ORIGINS='["https://app.example.com"]', TICKET_TTL_SECONDS="5")
    assert loaded.ws_allowed_origins == ["https://app.example.com"]
    assert loaded.ticket_ttl_seconds == 5
    assert loaded.https_port == 8443


def test_a_service_url_must_name_an_instance(monkeypatch):
    with pytest.raises(ValidationError, match="NOTIFICATION_SERVICE_URL"):
        settings(monkeypatch, NOTIFICATION_SERVICE_URL=" , ")
