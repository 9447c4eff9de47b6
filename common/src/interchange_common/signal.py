"""Signal: wakes every waiter when something new has happened. No polling.

A counter that only grows, and an event that is set and replaced at each ``fire``.
A waiter takes the counter *before* it reads, then waits for it to move past that
value: news that arrives between the read and the wait is never missed.
"""

import asyncio


class Signal:
    def __init__(self) -> None:
        self._generation = 0
        self._event = asyncio.Event()

    @property
    def generation(self) -> int:
        return self._generation

    def fire(self) -> None:
        self._generation += 1
        fired, self._event = self._event, asyncio.Event()
        fired.set()

    async def wait(self, *, after: int) -> None:
        while self._generation <= after:
            await self._event.wait()
