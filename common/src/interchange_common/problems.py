"""Errors as RFC 9457 ``application/problem+json``, with the request id.

Entry points raise or return these; nothing else in a service builds error bodies.
"""

from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Send

from interchange_common.errors import DatabaseUnavailable
from interchange_common.requestctx import current_request_id

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_body(*, status: int, detail: str, title: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        # RFC 9457: "about:blank" says the status code is all there is to know.
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": current_request_id(),
    }
    body.update(extra)
    return orjson.dumps(body)


def problem_response(
    *,
    status: int,
    detail: str,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    return Response(
        content=problem_body(status=status, detail=detail, title=title, **extra),
        status_code=status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


async def send_problem(send: Send, *, status: int, detail: str) -> None:
    """A problem answer as plain ASGI messages, for middleware that answers before
    or instead of the app."""
    body = problem_body(status=status, detail=detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def problem_handler(
    *,
    statuses: Mapping[type[Exception], int],
    details: Mapping[type[Exception], str] | None = None,
    default_status: int = 400,
) -> ExceptionHandler:
    """A FastAPI exception handler for a service's own error family: the status by the
    error's type (or its nearest listed base class), the error's text as detail unless a fixed one is given (a 404 must
    not say what exists), ``WWW-Authenticate`` with a 401 and ``Retry-After`` with a 503."""
    fixed = details or {}

    def nearest(table: Mapping[type[Exception], Any], exc: Exception) -> Any:
        return next((table[kind] for kind in type(exc).__mro__ if kind in table), None)

    async def handle(_: Request, exc: Exception) -> Response:
        status = nearest(statuses, exc) or default_status
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": "1"} if status == 503 else None
        return problem_response(status=status, detail=nearest(fixed, exc) or str(exc), headers=headers)

    return handle


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and what: the offending input itself may hold a password.
    return [
        {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
        for error in exc.errors()
    ]


async def _on_http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(status=exc.status_code, detail=str(exc.detail), headers=exc.headers)


async def _on_validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(status=422, detail="the request is not valid", errors=_validation_errors(exc))


_on_database_unavailable = problem_handler(
    statuses={DatabaseUnavailable: 503}, details={DatabaseUnavailable: "the database is unavailable"}
)


def install_problem_handlers(app: FastAPI) -> None:
    """Make FastAPI's own errors (404, 405, 422 …) problem responses, and a database
    that cannot serve the request (interchange_common.database) a 503 with Retry-After;
    say so in the app's OpenAPI document (which also loses FastAPI's null parameters)."""
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DatabaseUnavailable, _on_database_unavailable)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = without_null_parameters(with_problems(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details, with the request id. A 422 lists what is wrong in errors.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
PROBLEM_RESPONSE: dict[str, Any] = {
    "description": "Any error, as a problem (RFC 9457)",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
# What FastAPI documents for its validation errors, which install_problem_handlers replaces.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def with_problems(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every operation's errors as problems: FastAPI's own 422 shape
    gives way to a ``default`` problem response, which covers every error status."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if validation.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            responses.setdefault("default", PROBLEM_RESPONSE)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return document


def without_null_parameters(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents an optional parameter (``str | None``) as "a string or null";
    a query or header value is text or absent, never null, and a client that sends
    the text "null" gets a 422. The null alternative goes."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                choices = [choice for choice in schema.get("anyOf", ()) if choice != {"type": "null"}]
                if "anyOf" in schema and len(choices) == 1:
                    del schema["anyOf"]
                    schema.update(choices[0])
    return document
