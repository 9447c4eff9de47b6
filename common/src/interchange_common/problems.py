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


def install_problem_handlers(app: FastAPI) -> None:
    """Make FastAPI's own errors (404, 405, 422 …) problem responses."""
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
