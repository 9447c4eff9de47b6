"""Which instance of a service takes the next call.

Instances            what the upstream client asks: the base URLs to try, in order,
                     and "this one refused a connection"
 └── StaticInstances a fixed list (a comma-separated setting): round-robin, and an
                     instance that refused a connection waits a few seconds at the
                     back of the line (passive health, no probing)

Service discovery (Consul) is a second implementation of the same two methods.
"""

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Protocol


class Instances(Protocol):
    def candidates(self) -> list[str]:
        """Every known base URL, the one to try first first; never empty."""
        ...

    def mark_down(self, *, url: str) -> None:
        """``url`` refused a connection: prefer the others for a while."""
        ...


class StaticInstances:
    def __init__(
        self,
        *,
        urls: Sequence[str],
        down_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one instance URL is needed")
        self._urls = [url.rstrip("/") for url in urls]
        self._down_seconds = down_seconds
        self._clock = clock
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count()

    def candidates(self) -> list[str]:
        start = next(self._turn) % len(self._urls)
        rotation = self._urls[start:] + self._urls[:start]
        now = self._clock()
        up = [url for url in rotation if self._down_until.get(url, 0.0) <= now]
        # All of them down: still try them (down ones too, oldest failure first) rather
        # than refuse a call that might succeed.
        down = sorted((url for url in rotation if url not in up), key=lambda url: self._down_until[url])
        return up + down

    def mark_down(self, *, url: str) -> None:
        if url in self._urls:
            self._down_until[url] = self._clock() + self._down_seconds


def parse_urls(value: str) -> list[str]:
    """A comma-separated list of base URLs (one URL is a list of one)."""
    return [url.strip().rstrip("/") for url in value.split(",") if url.strip()]
