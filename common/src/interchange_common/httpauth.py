"""Service-token checks for FastAPI routes: a dependency that answers 401 problems."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

from interchange_common.errors import ServiceAuthError
from interchange_common.servicejwt import ServiceCaller, ServiceTokenVerifier


def service_caller_dependency(
    *, verifier: ServiceTokenVerifier
) -> Callable[[Request], Coroutine[Any, Any, ServiceCaller]]:
    """A dependency that returns the calling service, or refuses the request with 401.

    It is ``async`` although it never awaits: FastAPI runs plain ``def`` dependencies
    in a thread pool, and a thread hop per request costs more than the check itself.
    """

    async def require_service(request: Request) -> ServiceCaller:
        try:
            return verifier.verify_authorization(header=request.headers.get("authorization"))
        except ServiceAuthError as e:
            raise HTTPException(status_code=401, detail=str(e), headers={"WWW-Authenticate": "Bearer"}) from e

    return require_service
