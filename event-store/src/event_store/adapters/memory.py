"""EventStorage in memory: for unit tests and the contract suite's reference.

Every append takes one lock, so commit order and position order are the same by
construction; positions are assigned at once.
"""

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from event_store.domain.errors import SnapshotNotFound
from event_store.domain.model import (
    Decision,
    Direction,
    Existing,
    ExpectedVersion,
    NewEvent,
    Page,
    Snapshot,
    decide_append,
)
from interchange_common.events import RecordedEvent
from interchange_common.signal import Signal


def _utcnow() -> datetime:
    return datetime.now(UTC)


class InMemoryEventStorage:
    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._all: list[RecordedEvent] = []
        self._by_id: dict[uuid.UUID, RecordedEvent] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = asyncio.Lock()
        self._appended = Signal()
        self._sequenced = Signal()

    @property
    def appended(self) -> Signal:
        return self._appended

    @property
    def sequenced(self) -> Signal:
        return self._sequenced

    async def append(self, *, stream_id: str, expected: ExpectedVersion, events: list[NewEvent]) -> Decision:
        async with self._lock:
            stream = self._streams.setdefault(stream_id, [])
            existing = [
                Existing(id=row.id, stream_id=row.stream_id, version=row.version)
                for event in events
                if (row := self._by_id.get(event.id)) is not None
            ]
            decision = decide_append(
                stream_id=stream_id, expected=expected, current=len(stream), events=events, existing=existing
            )
            if decision.already_recorded:
                return decision
            now = self._clock()
            for offset, event in enumerate(events):
                recorded = RecordedEvent(
                    id=event.id,
                    stream_id=stream_id,
                    type=event.type,
                    data=event.data,
                    metadata=event.metadata,
                    version=decision.first_version + offset,
                    position=len(self._all) + 1,
                    recorded_at=now,
                )
                stream.append(recorded)
                self._all.append(recorded)
                self._by_id[event.id] = recorded
        self._appended.fire()
        self._sequenced.fire()
        return decision

    async def stream_version(self, *, stream_id: str) -> int:
        return len(self._streams.get(stream_id, ()))

    async def read_stream(self, *, stream_id: str, start: int, direction: Direction, limit: int) -> Page:
        stream = self._streams.get(stream_id, [])
        if direction is Direction.FORWARD:
            first = max(start, 1)
            events = stream[first - 1 : first - 1 + limit]
            return Page(events=events, next=first + len(events), end=len(events) < limit)
        last = len(stream) if start == 0 else min(start, len(stream))
        events = list(reversed(stream[max(0, last - limit) : last]))
        next_version = last - len(events)
        return Page(events=events, next=next_version, end=next_version < 1)

    async def read_all(self, *, start: int, limit: int) -> Page:
        first = max(start, 1)
        events = self._all[first - 1 : first - 1 + limit]
        return Page(events=events, next=first + len(events), end=len(events) < limit)

    async def save_snapshot(self, *, stream_id: str, version: int, data: dict[str, Any]) -> Snapshot:
        kept = self._snapshots.get(stream_id)
        if kept is None or kept.version < version:
            kept = Snapshot(stream_id=stream_id, version=version, data=data, saved_at=self._clock())
            self._snapshots[stream_id] = kept
        return kept

    async def load_snapshot(self, *, stream_id: str) -> Snapshot:
        if stream_id not in self._snapshots:
            raise SnapshotNotFound(stream_id)
        return self._snapshots[stream_id]
