"""Admission control: how many requests each upstream is given at once, and what the
others get.

An upstream past its capacity is not made faster by being sent more: the extra
requests queue inside it until every answer is slow, callers' deadlines pass and the
circuit breakers open. So each gateway instance keeps at most ``limit`` requests in
flight to each upstream (``*_MAX_IN_FLIGHT``). A request that finds them all busy
waits for one to end, first come first served, but only ``wait_seconds``
(``IN_FLIGHT_WAIT_SECONDS``); then it is refused (503, ``Retry-After: 1``) before any
work is done for it: no token check, no rate-limit count, nothing sent upstream, so a
refusal costs the caller milliseconds and the gateway a fraction of a millisecond of
CPU, and the requests let in keep their latency.

    try_enter()   a slot now, or False (never waits; the hot path)
    enter()       a slot now or within the wait: True; else False, counted as shed
    leave()       the slot goes to the first request waiting, or back to the pool

Each request let in must ``leave`` exactly once. Live connections (SSE, WebSocket)
are not counted at all: they last for hours.

A fixed limit, like Envoy's ``max_requests`` threshold and Netflix concurrency-limits'
blocking limiter with a timeout; not their adaptive limits, which steer by measured
latency: on a small machine the whole stack shares, that latency swings with
everything else running there.
"""

import asyncio
import functools
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter

SHED = Counter(
    "gateway_shed_requests_total",
    "Requests refused (503) because their upstream had its limit of requests in flight",
    ["upstream"],
)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# ``schedule(delay, callback)``: call back after ``delay`` seconds unless cancelled
# (the event loop's call_later; a test passes its own clock).
Schedule = Callable[[float, Callable[[], object]], Cancellable]


class ConcurrencyLimit:
    """At most ``limit`` requests at once to the upstream ``name``; a request past it
    waits up to ``wait_seconds`` for a slot (0: refused at once)."""

    def __init__(self, *, name: str, limit: int, wait_seconds: float, schedule: Schedule | None = None) -> None:
        if limit < 1 or wait_seconds < 0:
            raise ValueError("limit must be ≥ 1 and wait_seconds ≥ 0")
        self.name = name
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._schedule = schedule
        self._in_flight = 0
        # Requests waiting for a slot, oldest first; only undecided ones stay here.
        self._waiters: dict[asyncio.Future[bool], None] = {}
        self._shed = SHED.labels(upstream=name)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_enter(self) -> bool:
        """Take a free slot if there is one. None is free while requests wait: ``leave``
        hands a slot straight to the oldest of them, so nobody jumps the queue."""
        if self._in_flight < self.limit:
            self._in_flight += 1
            return True
        return False

    async def enter(self) -> bool:
        """A slot now or within the wait (True); False when the wait ran out."""
        if self.try_enter():
            return True
        if self.wait_seconds == 0:
            self._shed.inc()
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = None
        schedule = self._schedule or asyncio.get_running_loop().call_later
        timer = schedule(self.wait_seconds, functools.partial(self._expire, waiter))
        try:
            granted = await waiter
        except asyncio.CancelledError:
            # The caller went away. A slot handed over meanwhile is passed on.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.leave()
            raise
        finally:
            timer.cancel()
            self._waiters.pop(waiter, None)
        if not granted:
            self._shed.inc()
        return granted

    def leave(self) -> None:
        """A request let in is done: its slot goes to the oldest waiting request, or back."""
        while self._waiters:
            waiter = next(iter(self._waiters))
            del self._waiters[waiter]
            if not waiter.done():
                waiter.set_result(True)  # the slot changes hands: in flight stays the same
                return
        self._in_flight -= 1

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        self._waiters.pop(waiter, None)
        if not waiter.done():
            waiter.set_result(False)
