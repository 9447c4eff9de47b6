"""The internal HTTP API against a real PostgreSQL: service auth, actors, problems."""

import contextlib
import json
import uuid

import httpx
import pytest

from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from user_service.entrypoints.http import create_http_app

pytestmark = pytest.mark.integration
SECRET = "integration-secret-" + "y" * 32


@contextlib.asynccontextmanager
async def client_of(users, tokens):
    """The HTTP app over ``users``, called as order-service would call it."""
    app = create_http_app(
        users=users,
        verifier=ServiceTokenVerifier(service="user-service", secret=SECRET),
        jwks=tokens.jwks,
        health_checks=lambda: [],
        max_body_bytes=4096,
    )
    token = ServiceTokenIssuer(service="order-service", secret=SECRET, ttl_seconds=300).token_for(
        audience="user-service"
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://user-service",
        headers={"authorization": f"Bearer {token}"},
    ) as client:
        yield client


@pytest.fixture(scope="module")
async def client(users, tokens):
    async with client_of(users, tokens) as client:
        yield client


def as_actor(user_id, roles="user"):
    return {"x-actor-id": str(user_id), "x-actor-roles": roles}


async def register(client):
    response = await client.post(
        "/internal/users",
        json={"name": "Ada", "email": f"h-{uuid.uuid4().hex[:8]}@example.com", "password": f"pw-{uuid.uuid4().hex}"},
    )
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic x"])
async def test_internal_endpoints_refuse_calls_without_a_service_token(client, authorization):
    headers = {"authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(transport=client._transport, base_url="http://user-service", headers=headers) as bare:
        response = await bare.get(f"/internal/users/{uuid.uuid4()}")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_user_reads_themselves_and_not_others(client):
    me, other = await register(client), await register(client)
    assert (await client.get(f"/internal/users/{me['id']}", headers=as_actor(me["id"]))).json() == me
    response = await client.get(f"/internal/users/{other['id']}", headers=as_actor(me["id"]))
    assert response.status_code == 404


async def test_a_user_may_not_raise_their_own_role(client):
    me = await register(client)
    response = await client.patch(f"/internal/users/{me['id']}", json={"roles": ["admin"]}, headers=as_actor(me["id"]))
    assert response.status_code == 403
    assert (await client.get(f"/internal/users/{me['id']}")).json()["roles"] == ["user"]


async def test_unknown_fields_and_bad_values_are_422_and_change_nothing(client):
    me = await register(client)
    for body in ({"nickname": "x"}, {"status": "BANNED"}, {"email": "not-an-email"}, {"name": ""}):
        response = await client.patch(f"/internal/users/{me['id']}", json=body, headers=as_actor(me["id"]))
        assert response.status_code == 422, body
    assert (await client.get(f"/internal/users/{me['id']}")).json() == me


async def test_jwks_is_public(client):
    async with httpx.AsyncClient(transport=client._transport, base_url="http://user-service") as bare:
        response = await bare.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.json()["keys"][0]["kty"] == "RSA"


async def test_a_database_outage_is_a_503_problem(tokens):
    from sqlalchemy.ext.asyncio import create_async_engine

    from devstack.testing import free_port
    from user_service.adapters.passwords import Argon2PasswordHasher
    from user_service.adapters.repository import SqlUserRepository
    from user_service.domain.usecases import Users

    engine = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    users = Users(
        repository=SqlUserRepository(engine=engine, events_exchange="unused"),
        hasher=Argon2PasswordHasher(),
        tokens=tokens,
    )
    async with client_of(users, tokens) as client:
        response = await client.get(f"/internal/users/{uuid.uuid4()}")
    await engine.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"] == "the database is unavailable"


async def test_the_gateway_without_an_actor_acts_for_nobody(client):
    me = await register(client)
    token = ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=300).token_for(audience="user-service")
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=client._transport, base_url="http://user-service", headers=headers) as gw:
        assert (await gw.get(f"/internal/users/{me['id']}")).status_code == 404
        assert (await gw.get("/internal/users")).status_code == 403
        assert (await gw.patch(f"/internal/users/{me['id']}", json={"name": "x"})).status_code == 404
        assert (await gw.get(f"/internal/users/{me['id']}", headers=as_actor(me["id"]))).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Nul\u0000", "email": "nul@example.com", "password": "long enough"},
        {"name": "Lone \ud800", "email": "lone@example.com", "password": "long enough"},
        {"name": "Ada", "email": "pw@example.com", "password": "long \ud800 enough"},
    ],
    ids=["nul-in-name", "surrogate-in-name", "surrogate-in-password"],
)
async def test_text_postgres_or_argon2_cannot_take_is_a_422(client, body):
    response = await client.post(
        "/internal/users", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("password", ["x\u0000y", "\ud800\udc00\ud800"])
async def test_logging_in_with_unusable_text_is_a_422(client, password):
    body = json.dumps({"email": "a@example.com", "password": password})  # escapes the surrogates as JSON does
    response = await client.post("/internal/auth/token", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


async def test_a_nul_in_the_filter_is_a_422(client):
    assert (await client.get("/internal/users", params={"filter": "a\x00b"})).status_code == 422
