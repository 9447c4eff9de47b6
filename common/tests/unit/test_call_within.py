"""call_within: retries only the codes it is told to, within one deadline."""

import asyncio

import grpc
import pytest

from interchange_common.deadlines import DeadlineExceeded, deadline_in
from interchange_common.resilience import RetryBudget
from interchange_common.rpc import call_within


def failure(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=code.name)


class Method:
    """A unary method that fails with the given codes, then answers."""

    def __init__(self, *codes: grpc.StatusCode, hang: bool = False) -> None:
        self.codes = list(codes)
        self.hang = hang
        self.timeouts: list[float] = []

    async def __call__(self, request: object, *, timeout: float) -> str:
        self.timeouts.append(timeout)
        if self.hang:
            await asyncio.sleep(timeout)
            raise failure(grpc.StatusCode.DEADLINE_EXCEEDED)
        if self.codes:
            raise failure(self.codes.pop(0))
        return "answer"


async def test_retried_codes_are_retried_until_an_answer():
    method = Method(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert await call_within(method, "req", deadline=5, retry_on=frozenset({grpc.StatusCode.UNAVAILABLE})) == "answer"
    assert len(method.timeouts) == 3
    assert method.timeouts == sorted(method.timeouts, reverse=True)  # each attempt gets what is left


async def test_other_codes_are_raised_at_once():
    method = Method(grpc.StatusCode.INTERNAL)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_within(method, "req", deadline=5, retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert len(method.timeouts) == 1


async def test_attempts_are_bounded():
    method = Method(*[grpc.StatusCode.UNAVAILABLE] * 5)
    with pytest.raises(grpc.aio.AioRpcError):
        await call_within(method, "req", deadline=5, retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}), attempts=2)
    assert len(method.timeouts) == 2


async def test_a_hanging_server_costs_the_deadline_not_more():
    method = Method(hang=True)
    retry_on = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED})
    with pytest.raises((grpc.aio.AioRpcError, TimeoutError)):
        await call_within(method, "req", deadline=0.2, retry_on=retry_on)
    assert sum(method.timeouts) <= 0.2 + 1e-6


async def test_the_deadline_of_the_request_being_served_shortens_the_call():
    method = Method()
    with deadline_in(0.3):
        await call_within(method, "req", deadline=5, retry_on=frozenset())
    assert 0 < method.timeouts[0] <= 0.3


async def test_no_call_is_made_once_the_request_deadline_has_passed():
    method = Method()
    with deadline_in(0.0), pytest.raises(DeadlineExceeded):
        await call_within(method, "req", deadline=5, retry_on=frozenset())
    assert method.timeouts == []


async def test_an_empty_retry_budget_leaves_one_attempt():
    budget = RetryBudget(name="test", ratio=0.0, min_per_second=0.0, max_tokens=1)
    assert budget.try_retry()  # the one token in the bucket is spent
    method = Method(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.aio.AioRpcError):
        await call_within(
            method, "req", deadline=5, retry_on=frozenset({grpc.StatusCode.UNAVAILABLE}), attempts=5, budget=budget
        )
    assert len(method.timeouts) == 1
