import asyncio

import httpx
from fastapi import FastAPI

from interchange_common.health import HealthCheck, health_response, health_router, run_checks


async def ok() -> None:
    return None


async def broken() -> None:
    raise ConnectionRefusedError


async def slow() -> None:
    await asyncio.sleep(10)


async def test_all_checks_pass_gives_200():
    results = await run_checks(checks=[HealthCheck("a", ok), HealthCheck("b", ok)])
    assert health_response(results=results).status_code == 200


async def test_a_failing_or_slow_check_gives_503_and_names_it():
    results = await run_checks(
        checks=[HealthCheck("a", ok), HealthCheck("b", broken), HealthCheck("c", slow, timeout_seconds=0.05)]
    )
    by_name = {result.service: result for result in results}
    assert by_name["a"].healthy
    assert by_name["b"].error == "ConnectionRefusedError"
    assert by_name["c"].error is not None
    assert "no answer" in by_name["c"].error
    assert health_response(results=results).status_code == 503


async def test_checks_run_in_parallel():
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run_checks(checks=[HealthCheck(str(i), slow, timeout_seconds=0.2) for i in range(5)])
    # Five checks that each time out after 0.2 s: in parallel they take about 0.2 s, in series 1 s.
    assert loop.time() - started < 0.9


async def test_without_detail_health_gives_the_same_status_and_names_nothing():
    checks = [HealthCheck("redis", ok)]
    app = FastAPI()
    app.include_router(health_router(checks=lambda: checks, detail=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        healthy = await client.get("/health")
        checks.append(HealthCheck("user-service", broken))
        unhealthy = await client.get("/health")
    assert (healthy.status_code, healthy.json()) == (200, {"status": "healthy"})
    assert (unhealthy.status_code, unhealthy.json()) == (503, {"status": "unhealthy"})
