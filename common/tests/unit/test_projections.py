"""ReadAhead: a subscription read ahead into a bounded buffer, taken in batches."""

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest

from interchange_common.events import RecordedEvent
from interchange_common.projections import ReadAhead


def numbered(position: int) -> RecordedEvent:
    return RecordedEvent(
        id=uuid.uuid4(),
        stream_id="s",
        type="thing.happened",
        data={},
        metadata={},
        version=position,
        position=position,
        recorded_at=datetime.now(UTC),
    )


class Source:
    """Events 1, 2, 3 … as fast as they are asked for; ``then`` once ``count`` are out
    (None: for ever). ``reached`` is set once ``watch`` events have been asked for."""

    def __init__(self, *, count: int | None = None, then: Exception | None = None, watch: int = 0) -> None:
        self.pulled = 0
        self._count = count
        self._then = then
        self._watch = watch
        self.reached = asyncio.Event()

    async def events(self) -> AsyncGenerator[RecordedEvent, None]:
        while self._count is None or self.pulled < self._count:
            self.pulled += 1
            if self.pulled >= self._watch:
                self.reached.set()
            yield numbered(self.pulled)
            await asyncio.sleep(0)  # as a real subscription does: other tasks run meanwhile
        if self._then is not None:
            raise self._then


def positions(batch: list[RecordedEvent]) -> list[int | None]:
    return [event.position for event in batch]


async def test_a_take_hands_over_everything_that_has_come_up_to_the_most() -> None:
    source = Source(count=7, watch=7)
    async with ReadAhead(source.events(), size=10) as ahead:
        await source.reached.wait()  # the reader has queued the seventh
        assert positions(await ahead.take(most=5)) == [1, 2, 3, 4, 5]
        assert positions(await ahead.take(most=5)) == [6, 7]
        assert await ahead.take(most=5) == []  # the events have ended


async def test_a_take_waits_for_the_first_event_only() -> None:
    source = Source()
    async with ReadAhead(source.events(), size=10) as ahead:
        assert positions(await ahead.take(most=100)) == [1]


async def test_a_take_with_linger_collects_what_comes_meanwhile_up_to_the_most() -> None:
    source = Source()
    async with ReadAhead(source.events(), size=10) as ahead:
        assert positions(await ahead.take(most=3, linger=60)) == [1, 2, 3]  # the most, not the 60 s
        assert len(await ahead.take(most=3)) < 3  # without linger: what has come, one or two


async def test_a_take_with_linger_hands_over_what_came_when_the_time_is_up() -> None:
    async def two_then_nothing() -> AsyncGenerator[RecordedEvent, None]:
        yield numbered(1)
        yield numbered(2)
        await asyncio.Event().wait()
        yield numbered(3)  # never

    async with ReadAhead(two_then_nothing(), size=10) as ahead:
        assert positions(await ahead.take(most=10, linger=0.05)) == [1, 2]


async def test_the_reader_stays_at_most_a_buffer_ahead() -> None:
    size = 4
    source = Source(watch=size + 1)
    async with ReadAhead(source.events(), size=size) as ahead:
        await source.reached.wait()
        for _ in range(20):
            await asyncio.sleep(0)  # every ready task runs: an unbounded reader would read on
        assert source.pulled == size + 1  # a full buffer, and one event in hand
        taken = await ahead.take(most=2)
        for _ in range(20):
            await asyncio.sleep(0)
        assert source.pulled == len(taken) + size + 1


async def test_what_ended_the_events_is_raised_after_the_events_before_it() -> None:
    source = Source(count=3, then=ConnectionError("stream broken"), watch=3)
    async with ReadAhead(source.events(), size=10) as ahead:
        await source.reached.wait()
        assert positions(await ahead.take(most=2)) == [1, 2]
        assert positions(await ahead.take(most=2)) == [3]
        with pytest.raises(ConnectionError, match="stream broken"):
            await ahead.take(most=2)


async def test_leaving_the_block_stops_the_reader_and_closes_the_events() -> None:
    closed = asyncio.Event()

    async def events() -> AsyncGenerator[RecordedEvent, None]:
        try:
            position = 0
            while True:
                position += 1
                yield numbered(position)
        finally:
            closed.set()

    async with ReadAhead(events(), size=2) as ahead:
        await ahead.take(most=1)
    assert closed.is_set()
