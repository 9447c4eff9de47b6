"""The deadline of the work in progress, carried in a context variable and from one
service to the next, so that a caller who gives up stops the work it started.

HTTP    the caller sends ``X-Request-Timeout-Ms``: how many milliseconds it will
        still wait. Relative, so the two hosts' clocks need not agree; the time on
        the wire is spent from the callee's share. asgi.DeadlineMiddleware reads it.
gRPC    carries its own (``grpc-timeout``); the server interceptor reads it from the
        call's ``time_remaining()``.

An outgoing call takes ``remaining(at_most=its own timeout)`` as its timeout and
passes on what is left: the gateway's per-route timeout becomes the gRPC deadline
two hops down.
"""

import time
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token

DEADLINE_HEADER = "x-request-timeout-ms"
# Longer deadlines than this are taken as this: a caller cannot pin a worker for hours.
MAX_TIMEOUT_SECONDS = 300.0

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """No time is left of the deadline of the work in progress."""


def parse_timeout(value: str | None) -> float | None:
    """Seconds from an ``X-Request-Timeout-Ms`` value; None for a missing or malformed
    one (ignored, like any other header we cannot read)."""
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    return min(int(value) / 1000, MAX_TIMEOUT_SECONDS)


def time_left() -> float | None:
    """Seconds until the current deadline (may be ≤ 0), or None when there is none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def remaining(*, at_most: float) -> float:
    """The timeout for an outgoing call: its own ``at_most``, or less when the
    current deadline comes sooner. DeadlineExceeded when it has passed."""
    left = time_left()
    if left is None:
        return at_most
    if left <= 0:
        raise DeadlineExceeded("the caller's deadline has passed")
    return min(at_most, left)


def header_value(*, timeout: float) -> str:
    """The ``X-Request-Timeout-Ms`` value for a call made with ``timeout`` seconds."""
    return str(max(1, int(timeout * 1000)))


class _DeadlineIn:
    """What ``deadline_in`` returns: a class, not a generator, as it runs on every
    request that comes with a deadline."""

    __slots__ = ("_seconds", "_token")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._token: Token[float | None] | None = None

    def __enter__(self) -> None:
        if self._seconds is not None:
            at = time.monotonic() + self._seconds
            current = _deadline.get()
            self._token = _deadline.set(at if current is None else min(current, at))

    def __exit__(self, *_: object) -> None:
        if self._token is not None:
            _deadline.reset(self._token)


def deadline_in(seconds: float | None) -> AbstractContextManager[None]:
    """Work inside has ``seconds`` at most (never more than an enclosing deadline)."""
    return _DeadlineIn(seconds)


def adopt_timeout(seconds: float | None) -> None:
    """Take the caller's ``seconds`` (gRPC's ``time_remaining()``) as the deadline of
    the rest of this task. Only where the task's context is its own (a gRPC call)."""
    if seconds is not None:
        _deadline.set(time.monotonic() + min(seconds, MAX_TIMEOUT_SECONDS))
