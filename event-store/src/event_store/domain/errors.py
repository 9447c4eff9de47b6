"""What can go wrong in the event store's domain.

EventStoreError
 ├── WrongExpectedVersion   the stream is not at the version the writer expected (409)
 ├── InvalidAppend          a bad stream id, type, size, JSON or batch: nothing written (422)
 ├── InvalidRead            a bad position, version, direction or limit (422)
 └── SnapshotNotFound       the stream has no snapshot (404)
"""


class EventStoreError(Exception):
    """Base of every error the event store's domain raises."""


class WrongExpectedVersion(EventStoreError):
    """The stream is not at the version the writer expected; ``actual`` says where it is."""

    def __init__(self, *, stream_id: str, expected: str, actual: int) -> None:
        super().__init__(f"stream {stream_id} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class InvalidAppend(EventStoreError):
    """The append breaks a rule; nothing was written."""


class InvalidRead(EventStoreError):
    """The read asks for something that cannot be read."""


class SnapshotNotFound(EventStoreError):
    """The stream has no snapshot yet."""
