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


def test_a_secret_file_fills_what_the_environment_leaves_unset(monkeypatch, tmp_path):
    # Swarm mounts each secret as /run/secrets/<setting>, with no newline promised.
    monkeypatch.delenv("SERVICE_JWT_SECRET", raising=False)
    (tmp_path / "service_jwt_secret").write_text("z" * 48 + "\n")
    settings = ServiceSettings(_secrets_dir=tmp_path, environment="production")
    assert settings.service_jwt_secret.get_secret_value() == "z" * 48


def test_the_environment_wins_over_a_secret_file(monkeypatch, tmp_path):
    (tmp_path / "service_jwt_secret").write_text("z" * 48)
    monkeypatch.setenv("SERVICE_JWT_SECRET", "e" * 48)
    settings = ServiceSettings(_secrets_dir=tmp_path, environment="production")
    assert settings.service_jwt_secret.get_secret_value() == "e" * 48
