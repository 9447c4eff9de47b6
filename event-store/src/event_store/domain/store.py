"""What the event store does, written against EventStorage: each entry point calls these."""

from collections.abc import AsyncIterator
from typing import Any

from event_store.domain.model import (
    Decision,
    Direction,
    ExpectedVersion,
    NewEvent,
    Page,
    Snapshot,
    check_events,
    check_limit,
    check_snapshot,
    check_start,
    check_stream_id,
)
from event_store.domain.ports import EventStorage
from interchange_common.events import RecordedEvent


class EventStore:
    def __init__(self, *, storage: EventStorage) -> None:
        self._storage = storage

    async def append(self, *, stream_id: str, expected: ExpectedVersion, events: list[NewEvent]) -> Decision:
        return await self._storage.append(
            stream_id=check_stream_id(stream_id), expected=expected, events=check_events(events)
        )

    async def read_stream(self, *, stream_id: str, start: int, direction: Direction, limit: int) -> Page:
        return await self._storage.read_stream(
            stream_id=check_stream_id(stream_id),
            start=check_start(start, what="from_version"),
            direction=direction,
            limit=check_limit(limit),
        )

    async def read_all(self, *, start: int, limit: int) -> Page:
        return await self._storage.read_all(start=check_start(start, what="from_position"), limit=check_limit(limit))

    async def save_snapshot(self, *, stream_id: str, version: int, data: Any) -> Snapshot:
        check_stream_id(stream_id)
        check_snapshot(version=version, current=await self._storage.stream_version(stream_id=stream_id), data=data)
        return await self._storage.save_snapshot(stream_id=stream_id, version=version, data=data)

    async def load_snapshot(self, *, stream_id: str) -> Snapshot:
        return await self._storage.load_snapshot(stream_id=check_stream_id(stream_id))

    async def subscribe(self, *, stream_id: str | None, start: int) -> AsyncIterator[RecordedEvent]:
        """Catch up from ``start`` (a version for one stream, a position for all), then
        follow live. Wakes on the storage's signals; never polls while nothing happens."""
        if stream_id is not None:
            check_stream_id(stream_id)
        cursor = max(check_start(start, what="from"), 1)
        signal = self._storage.appended if stream_id is not None else self._storage.sequenced
        while True:
            seen = signal.generation
            if stream_id is not None:
                page = await self._storage.read_stream(
                    stream_id=stream_id, start=cursor, direction=Direction.FORWARD, limit=check_limit(0)
                )
            else:
                page = await self._storage.read_all(start=cursor, limit=check_limit(0))
            for event in page.events:
                yield event
            cursor = page.next
            if page.end:
                await signal.wait(after=seen)
