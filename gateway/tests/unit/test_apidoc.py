"""The public OpenAPI document, composed from the upstreams' own (domain.apidoc,
adapters.apidocs)."""

import copy
import re
from typing import Any

import pytest

from gateway.adapters.apidocs import ApiDocuments
from gateway.domain.apidoc import compose
from gateway.domain.errors import ApiDocumentIncomplete, UpstreamUnavailable
from gateway.domain.model import Access, Route
from gateway.domain.routes import ROUTES

PROBLEM = {"title": "Problem", "type": "object"}
DEFAULT = {"description": "problem", "content": {"application/problem+json": {"schema": {"$ref": "#/x"}}}}


def operation(*, status: str = "200", parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "operationId": "upstream_own_id",
        "parameters": parameters or [],
        "responses": {status: {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}},
    }


def path_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


USERS_DOCUMENT = {
    "paths": {
        "/internal/users/{id}": {
            "get": operation(parameters=[path_parameter("id")]),
            "delete": operation(status="204", parameters=[path_parameter("id")]),
        },
        "/internal/users": {
            "post": operation(status="201"),
            "get": operation(parameters=[{"name": "page", "in": "query", "schema": {"type": "integer"}}]),
        },
    },
    "components": {"schemas": {"Problem": PROBLEM, "UserPublic": {"type": "object"}}},
}
ORDERS_DOCUMENT = {
    "paths": {
        "/internal/orders": {
            "post": operation(
                status="201",
                parameters=[
                    {"name": "idempotency-key", "in": "header", "schema": {"type": "string"}},
                    {"name": "x-actor-id", "in": "header", "schema": {"type": "string"}},
                ],
            )
        },
        "/internal/orders/{order_id}/cancel": {"post": operation(parameters=[path_parameter("order_id")])},
    },
    "components": {"schemas": {"Problem": PROBLEM, "OrderPublic": {"type": "object"}}},
}
TABLE = (
    Route("POST", "/api/auth/register", "users", "/internal/users", Access.PUBLIC, summary="Register"),
    Route("GET", "/api/users/me", "users", "/internal/users/{actor_id}", Access.USER),
    Route("GET", "/api/users", "users", "/internal/users", Access.ADMIN),
    Route("GET", "/api/users/{user_id}", "users", "/internal/users/{user_id}", Access.USER),
    Route("DELETE", "/api/users/{user_id}", "users", "/internal/users/{user_id}", Access.USER),
    Route("POST", "/api/orders", "orders", "/internal/orders", Access.USER),
    Route("POST", "/api/orders/{order_id}/cancel", "orders", "/internal/orders/{order_id}/cancel", Access.USER),
)
OWN = {"openapi": "3.1.0", "info": {"title": "gateway", "version": "1"}, "paths": {"/health": {"get": {}}}}


def composed() -> dict[str, Any]:
    return compose(routes=TABLE, upstream_documents={"users": USERS_DOCUMENT, "orders": ORDERS_DOCUMENT}, own=OWN)


def test_every_route_is_documented_under_its_public_path():
    paths = composed()["paths"]
    for route in TABLE:
        assert route.method.lower() in paths[route.path], route
    assert "/health" in paths
    assert "/api/auth/ticket" in paths
    assert "/api/events" in paths
    assert not any(path.startswith("/internal") for path in paths)


def test_path_parameters_take_their_public_names_and_the_caller_is_no_parameter():
    paths = composed()["paths"]
    assert [p["name"] for p in paths["/api/users/{user_id}"]["get"]["parameters"]] == ["user_id"]
    assert "parameters" not in paths["/api/users/me"]["get"]  # {actor_id} is filled in by the gateway


def test_only_forwarded_headers_are_parameters():
    parameters = composed()["paths"]["/api/orders"]["post"]["parameters"]
    assert [p["name"] for p in parameters] == ["idempotency-key"]


def test_security_and_the_gateways_own_answers_follow_the_routes_access():
    paths = composed()["paths"]
    register, me, users = paths["/api/auth/register"]["post"], paths["/api/users/me"]["get"], paths["/api/users"]["get"]
    assert "security" not in register
    assert set(register["responses"]) == {"201", "429"}
    assert me["security"] == [{"bearer": []}]
    assert {"401", "429"} <= set(me["responses"])
    assert "403" not in me["responses"]
    assert "403" in users["responses"]
    assert users["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert register["summary"] == "Register"


def test_the_event_streams_429_describes_the_stream_cap_too():
    refused = composed()["paths"]["/api/events"]["get"]["responses"]["429"]
    assert "event streams" in refused["description"]
    assert refused["headers"]["Retry-After"]["required"] is True
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(refused["headers"])


def test_operation_ids_are_the_public_ones_and_unique():
    ids = [op["operationId"] for ops in composed()["paths"].values() for op in ops.values() if "operationId" in op]
    assert "post_api_orders_order_id_cancel" in ids
    assert "upstream_own_id" not in ids
    assert len(ids) == len(set(ids))


def test_a_created_object_links_to_every_route_that_takes_its_id():
    paths = composed()["paths"]
    links = paths["/api/orders"]["post"]["responses"]["201"]["links"]
    assert links == {
        "post_api_orders_order_id_cancel": {
            "operationId": "post_api_orders_order_id_cancel",
            "parameters": {"order_id": "$response.body#/id"},
        }
    }
    assert set(paths["/api/auth/register"]["post"]["responses"]["201"]["links"]) == {
        "get_api_users_user_id",
        "delete_api_users_user_id",
    }


def test_schemas_of_every_upstream_are_merged():
    schemas = composed()["components"]["schemas"]
    assert {"Problem", "UserPublic", "OrderPublic"} <= set(schemas)
    assert composed()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_a_route_its_upstream_does_not_document_is_an_error():
    users = copy.deepcopy(USERS_DOCUMENT)
    del users["paths"]["/internal/users/{id}"]["delete"]
    with pytest.raises(ApiDocumentIncomplete, match=re.escape("DELETE /internal/users/{user_id}")):
        compose(routes=TABLE, upstream_documents={"users": users, "orders": ORDERS_DOCUMENT}, own=OWN)


def test_one_schema_name_defined_two_ways_is_an_error():
    orders = copy.deepcopy(ORDERS_DOCUMENT)
    orders["components"]["schemas"]["Problem"] = {"type": "string"}
    with pytest.raises(ApiDocumentIncomplete, match="Problem"):
        compose(routes=TABLE, upstream_documents={"users": USERS_DOCUMENT, "orders": orders}, own=OWN)


def test_the_real_route_table_names_only_known_path_parameters():
    for route in ROUTES:
        public = {part for part in route.path.split("/") if part.startswith("{")}
        target = {part for part in route.target.split("/") if part.startswith("{")}
        assert target <= public | {"{actor_id}"}, route


class Upstreams:
    def __init__(self) -> None:
        self.fetches = 0
        self.down = False

    async def fetch(self, name: str) -> dict[str, Any]:
        self.fetches += 1
        if self.down:
            raise UpstreamUnavailable(name)
        return {"users": USERS_DOCUMENT, "orders": ORDERS_DOCUMENT}[name]


async def test_the_document_is_kept_for_its_ttl_and_served_stale_when_an_upstream_is_down():
    now = [0.0]
    upstreams = Upstreams()
    documents = ApiDocuments(
        fetch=upstreams.fetch, upstreams=["users", "orders"], routes=TABLE, ttl_seconds=60, clock=lambda: now[0]
    )
    first = await documents.current(own=OWN)
    assert await documents.current(own=OWN) == first
    assert upstreams.fetches == 2
    now[0] = 61.0
    upstreams.down = True
    assert await documents.current(own=OWN) == first  # stale rather than nothing
    assert await documents.current(own=OWN) == first
    assert upstreams.fetches == 4


async def test_without_any_document_yet_an_unreachable_upstream_is_unavailable():
    upstreams = Upstreams()
    upstreams.down = True
    documents = ApiDocuments(fetch=upstreams.fetch, upstreams=["users", "orders"], routes=TABLE)
    with pytest.raises(UpstreamUnavailable, match="cannot be composed"):
        await documents.current(own=OWN)
