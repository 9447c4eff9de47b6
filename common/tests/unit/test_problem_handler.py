"""problem_handler: a service's errors as problem responses."""

import orjson
import pytest

from interchange_common.problems import problem_handler


class ServiceError(Exception):
    pass


class NotFound(ServiceError):
    pass


class VeryNotFound(NotFound):
    pass


class SignedOut(ServiceError):
    pass


class StoreDown(ServiceError):
    pass


HANDLE = problem_handler(statuses={NotFound: 404, SignedOut: 401, StoreDown: 503}, details={NotFound: "not found"})


@pytest.mark.parametrize(
    ("error", "status", "detail", "headers"),
    [
        (NotFound("order 42 belongs to Bob"), 404, "not found", {}),
        (VeryNotFound("secret"), 404, "not found", {}),  # the nearest listed base class
        (SignedOut("token expired"), 401, "token expired", {"www-authenticate": "Bearer"}),
        (StoreDown("db"), 503, "db", {"retry-after": "1"}),
        (ServiceError("odd"), 400, "odd", {}),
    ],
)
async def test_errors_become_problems(error, status, detail, headers):
    response = await HANDLE(None, error)  # type: ignore[arg-type]
    body = orjson.loads(response.body)
    assert (response.status_code, body["status"], body["detail"]) == (status, status, detail)
    assert response.media_type == "application/problem+json"
    for name, value in headers.items():
        assert response.headers[name] == value
    if status not in (401, 503):
        assert "retry-after" not in response.headers
        assert "www-authenticate" not in response.headers
