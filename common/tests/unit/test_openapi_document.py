"""A service's OpenAPI document says what it really answers: problems for errors,
and parameters that are text or absent."""

from typing import Annotated

import httpx
from fastapi import FastAPI, Header, Query
from pydantic import BaseModel

from interchange_common.problems import PROBLEM_CONTENT_TYPE, install_problem_handlers


class Thing(BaseModel):
    name: str


def app() -> FastAPI:
    service = FastAPI()
    install_problem_handlers(service)

    @service.post("/things", status_code=201)
    async def create(
        thing: Thing,
        if_match: Annotated[str | None, Header(max_length=8)] = None,
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> Thing:
        return thing

    return service


def test_errors_are_documented_as_problems_and_fastapis_shape_is_gone():
    document = app().openapi()
    answers = document["paths"]["/things"]["post"]["responses"]
    assert set(answers) == {"201", "default"}
    assert answers["default"]["content"][PROBLEM_CONTENT_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail", "request_id"}


def test_an_optional_parameter_is_a_string_not_null():
    parameters = {p["name"]: p for p in app().openapi()["paths"]["/things"]["post"]["parameters"]}
    assert parameters["if-match"]["schema"] == {"type": "string", "maxLength": 8, "title": "If-Match"}
    assert parameters["if-match"]["required"] is False
    assert parameters["page"]["schema"]["minimum"] == 1


async def test_a_validation_error_answers_as_documented():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://service") as client:
        response = await client.post("/things", json={"name": 5})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert {"type", "title", "status", "detail", "request_id"} <= set(response.json())
