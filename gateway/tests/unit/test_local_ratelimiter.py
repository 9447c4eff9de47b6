"""The in-memory sliding window a gateway instance uses while Redis is down."""

from gateway.adapters.ratelimiter import LocalRateLimiter
from gateway.domain.model import RateLimitPolicy

POLICY = RateLimitPolicy("p", limit=4, window_seconds=10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_the_limit_then_refuses_until_the_window_slides():
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock)
    decisions = [limiter.hit(policy=POLICY, key="a") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert [d.remaining for d in decisions] == [3, 2, 1, 0, 0]
    assert 1 <= decisions[-1].reset_seconds <= 10
    assert limiter.hit(policy=POLICY, key="b").allowed  # keys apart
    clock.now += 10  # the next window: half of the last one still weighs
    allowed = [limiter.hit(policy=POLICY, key="a").allowed for _ in range(4)]
    assert allowed.count(True) < 4
    clock.now += 20  # both windows over
    assert all(limiter.hit(policy=POLICY, key="a").allowed for _ in range(4))


def test_memory_stays_bounded():
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock, max_keys=10)
    for n in range(50):
        limiter.hit(policy=POLICY, key=f"k{n}")
        clock.now += 1
    assert len(limiter._counts) <= 10
