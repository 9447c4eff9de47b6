"""Dependency checks run in parallel, each with its own timeout.

A service lists its checks (database, Redis, an upstream service …); /health runs
them all at once and answers 200 when every one passes, 503 otherwise, with the
same body shape as the gateway's aggregate (see docs/api.md).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel
from starlette.responses import Response

from interchange_common import lifecycle

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A named probe: healthy when it returns, unhealthy when it raises or times out."""

    name: str
    probe: Probe
    timeout_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    service: str
    healthy: bool
    response_time_ms: float
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "service": self.service,
            "status": "healthy" if self.healthy else "unhealthy",
            "response_time_ms": self.response_time_ms,
        }
        if self.error is not None:
            body["error"] = self.error
        return body


async def _run_one(check: HealthCheck) -> CheckResult:
    started = time.perf_counter()
    error: str | None = None
    try:
        await asyncio.wait_for(check.probe(), timeout=check.timeout_seconds)
    except TimeoutError:
        error = f"no answer within {check.timeout_seconds:g} s"
    except Exception as e:  # a failing probe is a result, not a crash
        error = type(e).__name__
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    return CheckResult(service=check.name, healthy=error is None, response_time_ms=elapsed_ms, error=error)


async def run_checks(*, checks: Sequence[HealthCheck]) -> list[CheckResult]:
    return list(await asyncio.gather(*(_run_one(check) for check in checks)))


def health_response(*, results: Sequence[CheckResult], detail: bool = True) -> Response:
    """200 when every check passed, else 503; with ``detail``, each check's result."""
    healthy = all(result.healthy for result in results)
    body: dict[str, Any] = {"status": "healthy" if healthy else "unhealthy"}
    if detail:
        body["services"] = [result.as_json() for result in results]
    return Response(
        content=orjson.dumps(body),
        status_code=200 if healthy else 503,
        media_type="application/json",
    )


class DependencyHealth(BaseModel):
    service: str
    status: Literal["healthy", "unhealthy"]
    response_time_ms: float
    error: str | None = None


class HealthReport(BaseModel):
    """What /health answers (documentation: the body is written by health_response)."""

    status: Literal["healthy", "unhealthy", "draining"]
    services: list[DependencyHealth] = []


def health_router(*, checks: Callable[[], Sequence[HealthCheck]], detail: bool = True) -> APIRouter:
    """GET /health (dependencies; 503 "draining" once the instance is stopping) and
    GET /health/live (the process answers). Without ``detail`` (a public port) /health
    answers the same statuses with the overall status alone, never which dependency
    is down or how fast each answered."""
    router = APIRouter(tags=["operations"])

    @router.get(
        "/health",
        summary="Health of every dependency, checked in parallel",
        response_model=HealthReport,
        responses={503: {"model": HealthReport, "description": "A dependency is down, or the instance is draining"}},
    )
    async def health() -> Response:
        if lifecycle.current().draining:
            # Going away: no new work from anyone who still asks (load balancers, Consul).
            return Response(content=b'{"status":"draining"}', status_code=503, media_type="application/json")
        return health_response(results=await run_checks(checks=checks()), detail=detail)

    @router.get("/health/live", summary="The process is up and serving")
    async def live() -> dict[str, str]:
        return {"status": "healthy"}

    return router
