"""Errors as RFC 9457 ``application/problem+json``, with the request id.

Entry points raise or return these; nothing else in a service builds error bodies.
"""

from collections.abc import Mapping
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
