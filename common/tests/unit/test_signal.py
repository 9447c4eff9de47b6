import asyncio

from interchange_common.signal import Signal


async def test_a_fire_wakes_every_waiter():
    signal = Signal()
    seen = signal.generation
    waiters = [asyncio.create_task(signal.wait(after=seen)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(waiter.done() for waiter in waiters)
    signal.fire()
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=1)


async def test_news_between_reading_and_waiting_is_not_missed():
    signal = Signal()
    seen = signal.generation
    signal.fire()  # arrives after the read, before the wait
    await asyncio.wait_for(signal.wait(after=seen), timeout=1)


async def test_a_waiter_waits_while_nothing_happens():
    signal = Signal()
    waiter = asyncio.create_task(signal.wait(after=signal.generation))
    done, _ = await asyncio.wait({waiter}, timeout=0.05)
    assert not done
    waiter.cancel()
