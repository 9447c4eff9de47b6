from pathlib import Path

import pytest

from devstack.compose import AddressMap, interpolate, parse_ports, read_env_file
from devstack.errors import ComposeError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "1"),
        ("x-${A}-y", "x-1-y"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY-fallback}", ""),
        ("${MISSING-fallback}", "fallback"),
        ("$${NOT_A_VARIABLE}", "${NOT_A_VARIABLE}"),
        ("${MISSING}", ""),
    ],
)
def test_interpolation_follows_compose(text, expected):
    assert interpolate(text, {"A": "1", "EMPTY": ""}) == expected


def test_a_required_variable_that_is_missing_says_so():
    with pytest.raises(ComposeError, match="SECRET is required: set it"):
        interpolate("${SECRET:?set it}", {})


def test_env_files_skip_comments_and_strip_quotes(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\n\nA=1\nB='two words'\nC=\"x=y\"\n")
    assert read_env_file(env) == {"A": "1", "B": "two words", "C": "x=y"}
    env.write_text("NOT A PAIR\n")
    with pytest.raises(ComposeError):
        read_env_file(env)


def test_ports_are_host_then_container():
    mappings = parse_ports(["8080:8080", "127.0.0.1:9001:9001/udp"])
    assert [(m.published, m.target) for m in mappings] == [(8080, 8080), (9001, 9001)]
    with pytest.raises(ComposeError):
        parse_ports(["8080"])


def test_urls_are_rewritten_by_what_they_name():
    addresses = AddressMap(
        infra_urls={"postgres": "postgresql://u:p@127.0.0.1:5433/postgres"},
        ports={("api", 80): 18080},
        secret_files={"key": Path("/keys/k.pem")},
        database_name=lambda name: f"t_{name}",
    )
    assert addresses.rewrite_url("postgresql+asyncpg://a:b@postgres:5432/app") == (
        "postgresql+asyncpg://u:p@127.0.0.1:5433/t_app"
    )
    assert addresses.rewrite_url("http://api:80/path") == "http://127.0.0.1:18080/path"
    assert addresses.rewrite_url("http://elsewhere:80/") == "http://elsewhere:80/"
    assert addresses.rewrite_value(service="s", key="K", value="/run/secrets/key") == "/keys/k.pem"
    assert addresses.rewrite_value(service="api", key="HTTP_PORT", value="80") == "18080"
    with pytest.raises(ComposeError):
        addresses.rewrite_value(service="s", key="K", value="/run/secrets/unknown")
