"""The keepalive that ends a wait on a connection whose peer went silent."""

import asyncio

import pytest

from interchange_common import tasks


class Answering:
    def __init__(self) -> None:
        self.probes = 0

    async def fetchval(self, query: str, *args: object, timeout: float | None = None) -> object:
        self.probes += 1
        return 1


class Silent:
    """A socket that died without a FIN: queries are never answered."""

    async def fetchval(self, query: str, *args: object, timeout: float | None = None) -> object:
        return await asyncio.wait_for(asyncio.Event().wait(), timeout=timeout)


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(tasks, "KEEPALIVE_SECONDS", 0.01)
    monkeypatch.setattr(tasks, "KEEPALIVE_TIMEOUT_SECONDS", 0.05)


async def test_a_live_connection_is_probed_while_waiting_and_the_wait_ends_on_the_event():
    connection, event = Answering(), asyncio.Event()
    waiter = asyncio.create_task(tasks.wait_alive(connection, event))
    async with asyncio.timeout(5):
        while connection.probes < 3:
            await asyncio.sleep(0.01)
    event.set()
    await asyncio.wait_for(waiter, timeout=1)


async def test_a_silent_connection_ends_the_wait_with_an_error():
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(tasks.wait_alive(Silent(), asyncio.Event()), timeout=5)
