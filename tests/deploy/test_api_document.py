"""docs/api.md, the public contract, names every public route the gateway serves, and
the documents that point at it find it."""

import re
from pathlib import Path

import pytest

from gateway.domain.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "docs" / "api.md"
# Routes the gateway answers itself or passes through unbuffered: not in the table.
OWN_ROUTES = (
    ("GET", "/health"),
    ("GET", "/health/live"),
    ("GET", "/metrics"),  # on the operations port
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/api/auth/ticket"),
    ("GET", "/api/events"),
    ("GET", "/ws"),
)


def documented() -> set[tuple[str, str]]:
    """(method, path) of every row of the contract's route tables, ids as ``{id}``."""
    rows = re.findall(r"^\| (GET|POST|PATCH|PUT|DELETE) (\S+) \|", CONTRACT.read_text(encoding="utf-8"), re.MULTILINE)
    return {(method, path) for method, path in rows}


@pytest.mark.parametrize(
    ("method", "path"),
    [(route.method, re.sub(r"\{\w+\}", "{id}", route.path)) for route in ROUTES] + list(OWN_ROUTES),
)
def test_every_public_route_is_in_the_contract(method, path):
    assert (method, path) in documented(), f"{method} {path} is served but not in docs/api.md"


def test_the_contract_documents_no_route_that_is_not_served():
    served = {(route.method, re.sub(r"\{\w+\}", "{id}", route.path)) for route in ROUTES} | set(OWN_ROUTES)
    assert documented() - served == set()


@pytest.mark.parametrize(
    "pointer", [ROOT / "README.md", ROOT / "gateway" / "src" / "gateway" / "entrypoints" / "http.py"]
)
def test_the_readme_and_the_openapi_description_point_at_the_contract(pointer):
    text = pointer.read_text(encoding="utf-8")
    assert "docs/api.md" in text
    assert "../shared/" not in text  # the first contract lived outside the repository
