"""What ensure_infra says when a server is missing and it may not install one."""

import pytest

from devstack import infra
from devstack.errors import InfraMissing


def test_a_missing_server_is_named_with_what_to_install(monkeypatch):
    monkeypatch.setattr(infra, "_first_working", lambda name: None if name == "redis" else f"{name}://found")
    monkeypatch.setattr(infra, "_can_install", lambda: False)
    with pytest.raises(InfraMissing) as error:
        infra.ensure_infra()
    message = str(error.value)
    assert "apt-get install redis-server" in message
    assert "REDIS_URL" in message
    assert "PostgreSQL" not in message


def test_found_servers_are_used_as_they_are(monkeypatch):
    monkeypatch.setattr(infra, "_first_working", lambda name: f"{name}://found")
    monkeypatch.setattr(infra, "_install_and_start", lambda missing: pytest.fail("nothing to install"))
    found = infra.ensure_infra()
    assert (found.postgres_url, found.redis_url, found.rabbitmq_url) == (
        "postgres://found",
        "redis://found",
        "rabbitmq://found",
    )


def test_an_environment_url_is_the_only_candidate(monkeypatch):
    tried: list[str] = []

    def redis_ok(url: str) -> bool:
        tried.append(url)
        return False

    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.1:1/0")
    monkeypatch.setattr(infra, "_redis_ok", redis_ok)
    assert infra._first_working("redis") is None
    assert tried == ["redis://10.0.0.1:1/0"]


@pytest.mark.parametrize("name", ["bad-name", "Upper", "x; DROP DATABASE postgres", ""])
async def test_only_plain_database_names_are_created(name):
    with pytest.raises(ValueError, match="plain database name"):
        await infra.create_databases(server_url="postgresql://unused@127.0.0.1:1/postgres", names={name})
