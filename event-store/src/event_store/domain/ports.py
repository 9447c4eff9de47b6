"""What the event store needs from storage: the protocol both backends satisfy.

The contract tests (tests/integration/test_storage_contract.py) hold both to it.
"""

from typing import Any, Protocol

from event_store.domain.model import Decision, Direction, ExpectedVersion, NewEvent, Page, Snapshot
from interchange_common.signal import Signal


class EventStorage(Protocol):
    @property
    def appended(self) -> Signal:
        """Fires after events are recorded in any stream."""

    @property
    def sequenced(self) -> Signal:
        """Fires after events get their global positions (readable through read_all)."""

    async def append(self, *, stream_id: str, expected: ExpectedVersion, events: list[NewEvent]) -> Decision:
        """Record the events atomically at the stream's next versions, or raise WrongExpectedVersion."""

    async def stream_version(self, *, stream_id: str) -> int:
        """The stream's last version; 0 for a stream without events."""

    async def read_stream(self, *, stream_id: str, start: int, direction: Direction, limit: int) -> Page:
        """Events of one stream from version ``start`` (inclusive); 0 is the start or the end."""

    async def read_all(self, *, start: int, limit: int) -> Page:
        """Events of every stream in global order, from position ``start`` (inclusive)."""

    async def save_snapshot(self, *, stream_id: str, version: int, data: dict[str, Any]) -> Snapshot:
        """Keep the snapshot unless a newer one is stored; return the one kept."""

    async def load_snapshot(self, *, stream_id: str) -> Snapshot:
        """The latest snapshot, or SnapshotNotFound."""
