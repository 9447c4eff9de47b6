import pytest
from pydantic import ValidationError

from interchange_common.settings import ServiceSettings


def make(monkeypatch, **env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return ServiceSettings()


def test_development_accepts_the_example_secret(monkeypatch):
    settings = make(monkeypatch, ENVIRONMENT="development", SERVICE_JWT_SECRET="dev-only-x")
    assert settings.service_jwt_secret.get_secret_value() == "dev-only-x"


@pytest.mark.parametrize("secret", ["dev-only-service-jwt-secret-0123456789abcdef", "change-me", "short"])
def test_production_refuses_placeholder_or_short_secrets(monkeypatch, secret):
    with pytest.raises(ValidationError, match="SERVICE_JWT_SECRET"):
        make(monkeypatch, ENVIRONMENT="production", SERVICE_JWT_SECRET=secret)


def test_a_missing_secret_is_refused_everywhere(monkeypatch):
    monkeypatch.delenv("SERVICE_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="service_jwt_secret"):
        make(monkeypatch, ENVIRONMENT="development")


def test_production_accepts_a_real_secret(monkeypatch):
    settings = make(monkeypatch, ENVIRONMENT="production", SERVICE_JWT_SECRET="x" * 48)
    assert settings.environment == "production"


def test_the_secret_never_shows_in_the_settings_repr(monkeypatch):
    settings = make(monkeypatch, ENVIRONMENT="production", SERVICE_JWT_SECRET="y" * 48)
    assert "y" * 48 not in repr(settings)
