"""Failing fast and retrying within reason, for every synchronous call between services.

CircuitBreaker   one per upstream: closed → open after N failures in a row → after a
                 cool-down half-open, where at most ``half_open_probes`` calls go
                 through at once; that many successes close it, one failure opens it
                 again. Its state is a Prometheus gauge (``circuit_breaker_state``:
                 0 closed, 1 half-open, 2 open) and every change is one log line.
RetryBudget      retries as a share of recent first attempts (a token bucket: each
                 first attempt deposits ``ratio`` of a token, time deposits
                 ``min_per_second``, each retry takes one), so that retries cannot
                 multiply the load on an upstream that is down.
retrying         tenacity, set up the one way: retry only what may be retried, capped
                 exponential backoff with full jitter, never past the deadline, and
                 within the budget.

Not purgatory, which order-service used before: its half-open state lets every
waiting call through at once (no probe limit) and it times the cool-down on the
wall clock, which jumps.
"""

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import tenacity
from prometheus_client import Counter, Gauge

from interchange_common.errors import InterchangeCommonError

_log = logging.getLogger("interchange.resilience")

BREAKER_STATE = Gauge("circuit_breaker_state", "0 closed, 1 half-open, 2 open", ["breaker"])
BREAKER_TRANSITIONS = Counter("circuit_breaker_transitions_total", "Circuit breaker state changes", ["breaker", "to"])
BREAKER_REJECTED = Counter("circuit_breaker_rejected_total", "Calls refused without being tried", ["breaker"])
RETRIES = Counter("upstream_retries_total", "Retries sent, by upstream", ["upstream"])
RETRIES_DENIED = Counter("upstream_retries_denied_total", "Retries the retry budget refused", ["upstream"])

Clock = Callable[[], float]


class BreakerState(enum.Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(InterchangeCommonError):
    """The breaker refused the call without trying it; ``retry_after`` seconds until
    it lets a probe through."""

    def __init__(self, *, breaker: str, retry_after: float) -> None:
        super().__init__(f"{breaker} is failing; not called again for {retry_after:.1f} s")
        self.breaker = breaker
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Admission:
    """One admitted call: the breaker's state generation it was let through in, and
    whether it is a half-open probe. A verdict from another generation is stale (a
    slow call let through while closed that ends after the breaker opened) and moves
    nothing."""

    generation: int
    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        *,
        name: str,
        failures_to_open: int = 5,
        open_seconds: float = 10.0,
        half_open_probes: int = 1,
        clock: Clock = time.monotonic,
    ) -> None:
        if failures_to_open < 1 or half_open_probes < 1 or open_seconds <= 0:
            raise ValueError("failures_to_open and half_open_probes must be ≥ 1, open_seconds > 0")
        self.name = name
        self._failures_to_open = failures_to_open
        self._open_seconds = open_seconds
        self._probes = half_open_probes
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = 0
        self._probe_successes = 0
        self._generation = 0
        # Calls come from one event loop, but a gRPC or thread-pool caller may not.
        self._lock = threading.Lock()
        BREAKER_STATE.labels(breaker=name).set(BreakerState.CLOSED.value)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._cool_down()
            return self._state

    def admit(self) -> Admission:
        """Let one call through, or raise CircuitOpen. Every admitted call must end
        in exactly one of ``succeeded``, ``failed`` or ``abandoned``, given its admission."""
        with self._lock:
            self._cool_down()
            if self._state is BreakerState.CLOSED:
                return Admission(generation=self._generation, probe=False)
            if self._state is BreakerState.HALF_OPEN and self._probing < self._probes:
                self._probing += 1
                return Admission(generation=self._generation, probe=True)
            retry_after = max(0.0, self._opened_at + self._open_seconds - self._clock())
        BREAKER_REJECTED.labels(breaker=self.name).inc()
        raise CircuitOpen(breaker=self.name, retry_after=retry_after)

    def succeeded(self, *, admission: Admission) -> None:
        with self._lock:
            if admission.generation != self._generation:
                return
            if self._state is BreakerState.HALF_OPEN:
                self._probing = max(0, self._probing - 1)
                self._probe_successes += 1
                if self._probe_successes >= self._probes:
                    self._move(BreakerState.CLOSED)
            self._failures = 0

    def failed(self, *, admission: Admission) -> None:
        with self._lock:
            if admission.generation != self._generation:
                return
            if self._state is BreakerState.HALF_OPEN:
                self._move(BreakerState.OPEN)
            elif self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self._failures_to_open:
                    self._move(BreakerState.OPEN)

    def abandoned(self, *, admission: Admission) -> None:
        """The call ended without a verdict (cancelled): free its probe slot."""
        with self._lock:
            if admission.probe and admission.generation == self._generation:
                self._probing = max(0, self._probing - 1)

    @contextlib.contextmanager
    def guard(self, *, is_failure: Callable[[BaseException], bool] = lambda _: True) -> Iterator[None]:
        """``with breaker.guard(): await call()``: admitted or CircuitOpen; an exception
        for which ``is_failure`` is true counts against the upstream, others (an answer
        such as "not found") count as success; cancellation counts as neither."""
        admission = self.admit()
        try:
            yield
        except Exception as e:
            if is_failure(e):
                self.failed(admission=admission)
            else:
                self.succeeded(admission=admission)
            raise
        except BaseException:
            self.abandoned(admission=admission)
            raise
        self.succeeded(admission=admission)

    def _cool_down(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self._open_seconds:
            self._move(BreakerState.HALF_OPEN)

    def _move(self, to: BreakerState) -> None:
        was, self._state = self._state, to
        self._generation += 1
        self._failures = 0
        self._probing = 0
        self._probe_successes = 0
        if to is BreakerState.OPEN:
            self._opened_at = self._clock()
        BREAKER_STATE.labels(breaker=self.name).set(to.value)
        BREAKER_TRANSITIONS.labels(breaker=self.name, to=to.name.lower()).inc()
        log = _log.warning if to is BreakerState.OPEN else _log.info
        log("circuit breaker state changed", extra={"breaker": self.name, "from": was.name, "to": to.name})


class RetryBudget:
    def __init__(
        self,
        *,
        name: str,
        ratio: float = 0.2,
        min_per_second: float = 1.0,
        max_tokens: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 <= ratio <= 1 or min_per_second < 0 or max_tokens < 1:
            raise ValueError("ratio in [0, 1], min_per_second ≥ 0, max_tokens ≥ 1")
        self.name = name
        self._ratio = ratio
        self._per_second = min_per_second
        self._max = max_tokens
        self._clock = clock
        self._tokens = max_tokens
        self._at = clock()
        self._lock = threading.Lock()

    def first_attempt(self) -> None:
        """A call is made (not a retry): it earns ``ratio`` of a retry."""
        with self._lock:
            self._refill()
            self._tokens = min(self._max, self._tokens + self._ratio)

    def try_retry(self) -> bool:
        """May one more attempt be sent? Takes a token when it may."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                RETRIES.labels(upstream=self.name).inc()
                return True
        RETRIES_DENIED.labels(upstream=self.name).inc()
        return False

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._max, self._tokens + (now - self._at) * self._per_second)
        self._at = now


class _SpendBudget(tenacity.stop.stop_base):
    """A stop condition that takes a retry token; placed last, so it is asked only
    when every other condition would let the retry happen."""

    def __init__(self, budget: RetryBudget) -> None:
        self._budget = budget

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return not self._budget.try_retry()


def retrying(
    *,
    retryable: Callable[[BaseException], bool],
    attempts: int,
    within: float,
    budget: RetryBudget | None = None,
    initial: float = 0.05,
    maximum: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tenacity.AsyncRetrying:
    """``async for attempt in retrying(...): with attempt: ...``: up to ``attempts``
    attempts, retried only when ``retryable(error)``; waits are capped exponential
    backoff with full jitter (uniform in [0, min(maximum, initial·2ⁿ)], AWS's
    "Exponential Backoff And Jitter"); no retry whose wait would end past ``within``
    seconds from now, none the budget refuses. The last error is raised as it is."""
    stop = tenacity.stop_after_attempt(attempts) | tenacity.stop_before_delay(within)
    if budget is not None:
        budget.first_attempt()
        stop = stop | _SpendBudget(budget)
    return tenacity.AsyncRetrying(
        # tenacity would offer cancellation too: it is never retried.
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, Exception) and retryable(e)),
        stop=stop,
        wait=tenacity.wait_random_exponential(multiplier=initial, max=maximum),
        reraise=True,
        sleep=sleep,
    )
