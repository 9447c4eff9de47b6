"""/docs: the public API document in Swagger UI, its files served by the gateway itself."""

import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from gateway.adapters.apidocs import ApiDocuments
from gateway.adapters.upstream import UpstreamClient
from gateway.domain.model import Access, Principal, RateDecision, RateLimitPolicy, Route, Standing, Upstream
from gateway.entrypoints.http import create_app
from interchange_common.servicejwt import ServiceTokenIssuer

TABLE = (
    Route("POST", "/api/auth/register", "users", "/internal/users", Access.PUBLIC),
    Route("POST", "/api/orders", "orders", "/internal/orders", Access.USER),
)
CREATED = {"201": {"description": "created", "content": {"application/json": {"schema": {"type": "object"}}}}}
DOCUMENTS = {
    "users": {"paths": {"/internal/users": {"post": {"responses": CREATED}}}},
    "orders": {"paths": {"/internal/orders": {"post": {"responses": CREATED}}}},
}


async def fetch(name: str) -> Mapping[str, Any]:
    return DOCUMENTS[name]


async def no_caller(**_: Any) -> Principal:
    raise AssertionError("the docs ask for no token")


async def no_count(**_: Any) -> RateDecision:
    raise AssertionError("the docs count against no rate limit")


async def no_standing(**_: Any) -> Standing:
    raise AssertionError("the docs ask for no token")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The public app, its upstreams' documents at hand and nothing else to call."""
    app = create_app(
        routes=TABLE,
        policies={"default": RateLimitPolicy("default", 100, 60)},
        upstream=UpstreamClient(
            upstreams={name: Upstream(name, audience=f"{name}-service") for name in DOCUMENTS}, balancers={}
        ),
        verify=no_caller,
        hit=no_count,
        check=no_standing,
        issuer=ServiceTokenIssuer(service="gateway", secret="docs-test-secret-" + "z" * 32, ttl_seconds=300),
        health_checks=lambda: [],
        cors_origins=[],
        max_body_bytes=1024,
        api_documents=ApiDocuments(fetch=fetch, upstreams=list(DOCUMENTS), routes=TABLE),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client


async def test_the_page_shows_the_public_document_with_the_gateways_own_files(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "url: '/openapi.json'" in page
    assert re.findall(r'(?:href|src)="([^"]+)"', page) == [
        "/docs/assets/swagger-ui.css",
        "/docs/assets/favicon.png",
        "/docs/assets/swagger-ui-bundle.js",
    ]
    assert not re.search(r"https?://", page)  # no CDN, no online validator
    assert (await client.get("/openapi.json")).status_code == 200


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/docs/assets/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/assets/swagger-ui.css", "text/css"),
        ("/docs/assets/favicon.png", "image/png"),
    ],
)
async def test_every_file_the_page_loads_is_served(client, path, content_type):
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == content_type
    assert response.content


async def test_the_script_is_a_swagger_ui_that_reads_openapi_3_1(client):
    """Swagger UI 4 refuses a 3.1 document ("Unable to render this definition")."""
    script = (await client.get("/docs/assets/swagger-ui-bundle.js")).text
    assert re.search(r'PACKAGE_VERSION:"5\.', script)
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1.")


async def test_an_unknown_file_is_404(client):
    assert (await client.get("/docs/assets/nothing.js")).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/%2e%2e/core.py",  # the package's own code, one folder up
        "/docs/assets/%2e%2e/%2e%2e/fastapi/__init__.py",
        "/docs/assets/..%2fcore.py",
        "/docs/assets/..%2F..%2Ffastapi%2F__init__.py",
        "/docs/assets/%2e%2e%5ccore.py",
    ],
)
async def test_a_path_out_of_the_assets_folder_finds_nothing(client, path):
    response = await client.get(path)
    assert response.status_code == 404
    assert b"import" not in response.content


async def test_the_document_does_not_list_the_docs(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/api/auth/register", "/api/orders", "/health"} <= set(paths)
    assert not any(path.startswith("/docs") for path in paths)
