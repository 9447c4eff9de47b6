"""The circuit breaker's states, the retry budget and the retry policy, on a fake clock."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from interchange_common.resilience import BreakerState, CircuitBreaker, CircuitOpen, RetryBudget, retrying


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


def breaker(clock: Clock, **options: float) -> CircuitBreaker:
    settings = {"failures_to_open": 3, "open_seconds": 10.0, "half_open_probes": 2} | options
    return CircuitBreaker(name="test-upstream", clock=clock, **settings)  # type: ignore[arg-type]


def fail(b: CircuitBreaker) -> None:
    with pytest.raises(Boom), b.guard():
        raise Boom


def state_of(b: CircuitBreaker) -> BreakerState:
    return b.state  # a call each time: mypy does not narrow it between asserts


def state_metric() -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"breaker": "test-upstream"})


def test_opens_after_failures_in_a_row_and_refuses_without_calling():
    clock = Clock()
    b = breaker(clock)
    fail(b)
    fail(b)
    with b.guard():
        pass  # a success in between starts the count again
    fail(b)
    fail(b)
    assert state_of(b) is BreakerState.CLOSED
    fail(b)
    assert state_of(b) is BreakerState.OPEN
    assert state_metric() == 2
    clock.now += 4
    with pytest.raises(CircuitOpen) as refused:
        b.admit()
    assert refused.value.retry_after == pytest.approx(6)


def test_half_open_lets_a_limited_number_of_probes_through_and_closes_on_their_success():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        fail(b)
    clock.now += 10
    assert state_of(b) is BreakerState.HALF_OPEN
    assert state_metric() == 1
    first, second = b.admit(), b.admit()
    with pytest.raises(CircuitOpen):
        b.admit()  # two probes in flight: the third call is refused
    b.succeeded(admission=first)
    assert state_of(b) is BreakerState.HALF_OPEN
    b.succeeded(admission=second)
    assert state_of(b) is BreakerState.CLOSED
    assert state_metric() == 0


def test_a_failed_probe_opens_it_again_for_a_whole_period():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        fail(b)
    clock.now += 10
    fail(b)
    assert state_of(b) is BreakerState.OPEN
    clock.now += 9.9
    assert state_of(b) is BreakerState.OPEN


def test_answers_that_are_not_failures_and_cancellations_do_not_count():
    clock = Clock()
    b = breaker(clock, failures_to_open=1, half_open_probes=1)
    with pytest.raises(KeyError), b.guard(is_failure=lambda e: not isinstance(e, KeyError)):
        raise KeyError("not found is an answer")
    assert state_of(b) is BreakerState.CLOSED
    fail(b)
    clock.now += 10
    with pytest.raises(asyncio.CancelledError), b.guard():
        raise asyncio.CancelledError
    b.succeeded(admission=b.admit())  # the cancelled probe gave its slot back
    assert state_of(b) is BreakerState.CLOSED


def test_a_slow_call_from_before_the_breaker_opened_moves_nothing_when_it_ends():
    clock = Clock()
    b = breaker(clock, failures_to_open=1, half_open_probes=1)
    slow = b.admit()  # let through while closed
    fail(b)
    clock.now += 10
    probe = b.admit()  # half-open: the one probe
    b.succeeded(admission=slow)  # not the probe's verdict
    assert state_of(b) is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        b.admit()  # the probe's slot is still taken
    b.failed(admission=slow)
    assert state_of(b) is BreakerState.HALF_OPEN
    b.abandoned(admission=slow)
    with pytest.raises(CircuitOpen):
        b.admit()
    b.succeeded(admission=probe)
    assert state_of(b) is BreakerState.CLOSED


def test_transitions_are_counted():
    clock = Clock()
    b = CircuitBreaker(name="counted", failures_to_open=1, open_seconds=1, clock=clock)

    def transitions(to: str) -> float:
        return REGISTRY.get_sample_value("circuit_breaker_transitions_total", {"breaker": "counted", "to": to}) or 0

    fail(b)
    clock.now += 1
    b.succeeded(admission=b.admit())
    assert (transitions("open"), transitions("half_open"), transitions("closed")) == (1, 1, 1)


def test_the_budget_allows_a_share_of_first_attempts_plus_a_trickle():
    clock = Clock()
    budget = RetryBudget(name="b", ratio=0.2, min_per_second=1.0, max_tokens=2, clock=clock)
    assert budget.try_retry()
    assert budget.try_retry()
    assert not budget.try_retry()
    for _ in range(5):
        budget.first_attempt()
    assert budget.try_retry()  # five calls earned one retry
    assert not budget.try_retry()
    clock.now += 1.0
    assert budget.try_retry()  # a second earned one more
    assert not budget.try_retry()


class Attempts:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.count = 0
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    async def call(self) -> str:
        self.count += 1
        if self.count <= self.failures:
            raise ConnectionRefusedError
        return "answer"


async def run(attempts: Attempts, **options: object) -> str:
    policy = {"retryable": lambda e: isinstance(e, ConnectionRefusedError), "attempts": 5, "within": 10.0} | options
    async for attempt in retrying(sleep=attempts.sleep, **policy):  # type: ignore[arg-type]
        with attempt:
            return await attempts.call()
    raise AssertionError("unreachable")


async def test_retries_until_an_answer_with_full_jitter_under_a_growing_cap():
    attempts = Attempts(failures=4)
    assert await run(attempts, initial=0.1, maximum=0.3) == "answer"
    assert attempts.count == 5
    caps = [0.1, 0.2, 0.3, 0.3]
    assert all(0 <= wait <= cap for wait, cap in zip(attempts.waits, caps, strict=True))


async def test_what_may_not_be_retried_is_raised_at_once():
    attempts = Attempts(failures=1)
    with pytest.raises(ConnectionRefusedError):
        await run(attempts, retryable=lambda e: False)
    assert attempts.count == 1


async def test_no_retry_whose_wait_would_pass_the_deadline():
    attempts = Attempts(failures=10)
    with pytest.raises(ConnectionRefusedError):
        await run(attempts, within=0.0)
    assert attempts.count == 1


async def test_the_budget_caps_retries_across_calls():
    budget = RetryBudget(name="calls", ratio=0.0, min_per_second=0.0, max_tokens=3)
    counts = []
    for _ in range(3):
        attempts = Attempts(failures=10)
        with pytest.raises(ConnectionRefusedError):
            await run(attempts, budget=budget)
        counts.append(attempts.count)
    assert counts == [4, 1, 1]  # three tokens, spent by the first call's retries


async def test_cancellation_is_never_retried_even_when_everything_else_is():
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    async def call() -> None:
        async for attempt in retrying(retryable=lambda e: True, attempts=5, within=10.0, sleep=Attempts(0).sleep):
            with attempt:
                await cancelled()

    with pytest.raises(asyncio.CancelledError):
        await call()
    assert calls == 1
