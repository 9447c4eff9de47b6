import asyncio

from interchange_common.health import HealthCheck, health_response, run_checks


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
