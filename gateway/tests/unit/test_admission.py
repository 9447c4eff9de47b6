"""The concurrency limit per upstream: slots, the short first-come-first-served wait,
refusals, and a waiter that goes away. Time is a fake: the wait ends when the test
fires its timer, never by sleeping."""

import asyncio
import uuid
from collections.abc import Callable

import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.requests import Request
from starlette.responses import Response

from gateway.adapters.admission import ConcurrencyLimit
from gateway.entrypoints.http import admitted
from interchange_common.asgi import LOG_FIELDS


class Timer:
    def __init__(self, delay: float, callback: Callable[[], object]) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """The limit's schedule: timers that go off when the test says so."""

    def __init__(self) -> None:
        self.made: list[Timer] = []

    def __call__(self, delay: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(delay, callback)
        self.made.append(timer)
        return timer

    def fire(self) -> None:
        """Every timer not cancelled goes off (the wait is over for everyone waiting)."""
        for timer in self.made:
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()


def limit_of(size: int, *, timers: Timers, wait_seconds: float = 0.05) -> ConcurrencyLimit:
    return ConcurrencyLimit(name=f"svc-{uuid.uuid4().hex[:8]}", limit=size, wait_seconds=wait_seconds, schedule=timers)


def shed(limit: ConcurrencyLimit) -> float:
    return REGISTRY.get_sample_value("gateway_shed_requests_total", {"upstream": limit.name}) or 0.0


async def queued(limit: ConcurrencyLimit, count: int) -> None:
    """Let the event loop run until ``count`` requests wait for a slot."""
    for _ in range(100):
        if limit.waiting == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{limit.waiting} waiting, not {count}")


async def test_slots_up_to_the_limit_then_none_until_one_leaves():
    limit = limit_of(2, timers=Timers())
    assert [limit.try_enter() for _ in range(3)] == [True, True, False]
    assert limit.in_flight == 2
    limit.leave()
    assert limit.try_enter()
    limit.leave()
    limit.leave()
    assert limit.in_flight == 0


async def test_a_free_slot_is_taken_without_waiting_or_a_timer():
    timers = Timers()
    limit = limit_of(1, timers=timers)
    assert await limit.enter()
    assert timers.made == []


async def test_a_waiting_request_gets_the_slot_that_frees_up_and_its_timer_is_cancelled():
    timers = Timers()
    limit = limit_of(1, timers=timers)
    assert limit.try_enter()
    waiting = asyncio.create_task(limit.enter())
    await queued(limit, 1)
    assert timers.made[0].delay == 0.05
    limit.leave()
    assert await waiting
    assert limit.in_flight == 1  # the slot changed hands
    assert limit.waiting == 0
    assert timers.made[0].cancelled


async def test_waiters_are_served_first_come_first_served_and_newcomers_do_not_jump_the_queue():
    limit = limit_of(1, timers=Timers())
    assert limit.try_enter()
    served: list[str] = []

    async def request(name: str) -> None:
        assert await limit.enter()
        served.append(name)

    first = asyncio.create_task(request("first"))
    await queued(limit, 1)
    second = asyncio.create_task(request("second"))
    await queued(limit, 2)
    limit.leave()
    assert not limit.try_enter()  # the freed slot is the first waiter's, not a newcomer's
    await first
    limit.leave()
    await second
    assert served == ["first", "second"]
    limit.leave()
    assert limit.in_flight == 0


async def test_when_the_wait_runs_out_the_request_is_refused_and_counted_as_shed():
    timers = Timers()
    limit = limit_of(1, timers=timers)
    assert limit.try_enter()
    waiting = [asyncio.create_task(limit.enter()) for _ in range(3)]
    await queued(limit, 3)
    timers.fire()
    assert await asyncio.gather(*waiting) == [False, False, False]
    assert shed(limit) == 3
    assert limit.waiting == 0
    assert limit.in_flight == 1
    limit.leave()
    assert limit.try_enter()  # nothing left behind by the refused ones


async def test_with_no_wait_a_full_limit_refuses_at_once():
    timers = Timers()
    limit = limit_of(1, timers=timers, wait_seconds=0)
    assert await limit.enter()
    assert not await limit.enter()
    assert timers.made == []
    assert shed(limit) == 1


async def test_a_waiter_that_goes_away_leaves_the_queue_and_is_not_shed():
    timers = Timers()
    limit = limit_of(1, timers=timers)
    assert limit.try_enter()
    gone = asyncio.create_task(limit.enter())
    await queued(limit, 1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert limit.waiting == 0
    assert timers.made[0].cancelled
    limit.leave()
    assert limit.in_flight == 0
    assert shed(limit) == 0


async def test_a_slot_handed_to_a_waiter_that_goes_away_before_it_runs_passes_on():
    limit = limit_of(1, timers=Timers())
    assert limit.try_enter()
    gone = asyncio.create_task(limit.enter())
    await queued(limit, 1)
    next_in_line = asyncio.create_task(limit.enter())
    await queued(limit, 2)
    limit.leave()  # the slot is handed to ``gone`` ...
    gone.cancel()  # ... which is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert limit.waiting == 0  # handed on to the next in line
    assert await next_in_line
    assert limit.in_flight == 1
    limit.leave()
    assert limit.in_flight == 0


def test_a_limit_below_one_or_a_negative_wait_is_refused():
    with pytest.raises(ValueError, match="limit"):
        ConcurrencyLimit(name="x", limit=0, wait_seconds=0.05)
    with pytest.raises(ValueError, match="wait_seconds"):
        ConcurrencyLimit(name="x", limit=1, wait_seconds=-1)


def request_to(path: str) -> Request:
    return Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""})


async def test_the_endpoint_past_the_limit_answers_503_with_retry_after_without_running():
    timers = Timers()
    limit = limit_of(1, timers=timers)
    release = asyncio.Event()
    ran: list[str] = []

    async def upstream_work(request: Request) -> Response:
        ran.append(request.url.path)
        await release.wait()
        return Response(status_code=201)

    endpoint = admitted(upstream_work, limit=limit)
    holding = asyncio.ensure_future(endpoint(request_to("/api/orders/1")))
    refused_request = request_to("/api/orders/2")
    refusing = asyncio.ensure_future(endpoint(refused_request))
    await queued(limit, 1)
    timers.fire()
    refused = await refusing
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.media_type == "application/problem+json"
    problem = orjson.loads(refused.body)
    assert problem["status"] == 503
    assert problem["detail"] == f"{limit.name} is at capacity; try again shortly"
    assert refused_request.scope[LOG_FIELDS] == {"shed": limit.name}
    assert ran == ["/api/orders/1"]
    release.set()
    assert (await holding).status_code == 201
    assert limit.in_flight == 0


async def test_the_endpoint_gives_its_slot_back_when_the_work_fails():
    limit = limit_of(1, timers=Timers())

    async def failing(_: Request) -> Response:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await admitted(failing, limit=limit)(request_to("/api/orders"))
    assert limit.in_flight == 0
