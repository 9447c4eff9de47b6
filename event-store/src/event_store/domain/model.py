"""Streams, expected versions and the decision to append.

NewEvent          what a writer sends: its own id, a type, JSON data and metadata
ExpectedVersion   any | no_stream | stream_exists | an exact last version
Existing          an event already stored under one of the ids being appended
decide_append     the rules, as one pure function both storage backends call
"""

import math
import re
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from event_store.domain.errors import InvalidAppend, InvalidRead, WrongExpectedVersion

MAX_STREAM_ID_LENGTH = 200
MAX_TYPE_LENGTH = 200
MAX_EVENT_BYTES = 64 * 1024  # data and metadata of one event, as JSON
MAX_BATCH = 1000
MAX_PAGE = 1000
DEFAULT_PAGE = 100

MAX_NUMBER = 2**62  # versions and positions stay far inside PostgreSQL's bigint
# PostgreSQL's jsonb cannot hold the NUL character: an unescaped \u0000 in JSON text.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# Matched with fullmatch: "$" alone would accept a trailing newline.
_STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")
# Types are RabbitMQ routing keys too: dot-separated words (order.created).
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)*")
_NUMBER = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²"


class Expect(Enum):
    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"
    EXACT = "exact"


@dataclass(frozen=True, slots=True)
class ExpectedVersion:
    kind: Expect
    version: int = 0  # only for EXACT

    def __str__(self) -> str:
        return str(self.version) if self.kind is Expect.EXACT else self.kind.value

    def allows(self, *, current: int) -> bool:
        match self.kind:
            case Expect.ANY:
                return True
            case Expect.NO_STREAM:
                return current == 0
            case Expect.STREAM_EXISTS:
                return current > 0
            case Expect.EXACT:
                return current == self.version

    @classmethod
    def parse(cls, value: str | int) -> "ExpectedVersion":
        """From the API: one of the words, or a version number (an int or its digits)."""
        if isinstance(value, bool):
            raise InvalidAppend("expected_version must be any, no_stream, stream_exists or a version")
        if isinstance(value, int) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
            return cls.exact(int(value))
        try:
            kind = Expect(value)
        except ValueError as e:
            raise InvalidAppend("expected_version must be any, no_stream, stream_exists or a version") from e
        if kind is Expect.EXACT:
            raise InvalidAppend("give the exact version as a number")
        return cls(kind)

    @classmethod
    def exact(cls, version: int) -> "ExpectedVersion":
        if version < 0:
            raise InvalidAppend("expected_version cannot be negative")
        if version > MAX_NUMBER:
            raise InvalidAppend("expected_version is larger than any stream")
        # Version 0 is "the stream has no events": the same as no_stream.
        return cls(Expect.NO_STREAM) if version == 0 else cls(Expect.EXACT, version)


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: uuid.UUID
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Existing:
    """An event already recorded under an id the writer sent."""

    id: uuid.UUID
    stream_id: str
    version: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Write ``events`` at ``first_version`` onwards, or nothing when ``already_recorded``."""

    first_version: int
    last_version: int
    already_recorded: bool


def check_stream_id(stream_id: str) -> str:
    if not 0 < len(stream_id) <= MAX_STREAM_ID_LENGTH or not _STREAM_ID.fullmatch(stream_id):
        raise InvalidAppend(
            f"stream id must be 1 to {MAX_STREAM_ID_LENGTH} characters: letters, digits and _.:@- "
            "(starting with a letter or digit)"
        )
    return stream_id


def check_events(events: list[NewEvent]) -> list[NewEvent]:
    if not events:
        raise InvalidAppend("an append needs at least one event")
    if len(events) > MAX_BATCH:
        raise InvalidAppend(f"at most {MAX_BATCH} events per append")
    if len({event.id for event in events}) != len(events):
        raise InvalidAppend("event ids must be unique within an append")
    for event in events:
        if not 0 < len(event.type) <= MAX_TYPE_LENGTH or not _TYPE.fullmatch(event.type):
            raise InvalidAppend(f"event type {event.type[:50]!r} must be dot-separated words, like order.created")
        if not isinstance(event.data, dict) or not isinstance(event.metadata, dict):
            raise InvalidAppend("event data and metadata must be JSON objects")
        data, metadata = encode_json(event.data, what=f"event {event.id}"), encode_json(event.metadata, what="metadata")
        if len(data) + len(metadata) > MAX_EVENT_BYTES:
            raise InvalidAppend(f"event {event.id} is larger than {MAX_EVENT_BYTES} bytes")
        check_json_text(data + metadata, what=f"event {event.id}")
    return events


def parse_number(text: str, *, what: str) -> int:
    """A version or position sent as text (a header, a query)."""
    if not _NUMBER.fullmatch(text):
        raise InvalidRead(f"{what} must be a number")
    return int(text)


def encode_json(value: Any, *, what: str) -> bytes:
    """JSON exactly as it will be stored: integers up to 64 bits, finite numbers,
    valid Unicode (orjson refuses the rest, where json would guess)."""
    _check_finite(value, what=what)
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as e:
        raise InvalidAppend(f"{what} cannot be stored exactly as JSON: {e}") from e


def _check_finite(value: Any, *, what: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidAppend(f"{what} holds NaN or an infinity, which JSON cannot carry")
    if isinstance(value, dict):
        for item in value.values():
            _check_finite(item, what=what)
    elif isinstance(value, list):
        for item in value:
            _check_finite(item, what=what)


def check_json_text(encoded: bytes, *, what: str) -> None:
    if _JSON_NUL.search(encoded):
        raise InvalidAppend(f"{what} contains a NUL character, which cannot be stored")


def decide_append(
    *, stream_id: str, expected: ExpectedVersion, current: int, events: list[NewEvent], existing: list[Existing]
) -> Decision:
    """Whether and where to write ``events`` on a stream now at version ``current``.

    Sending the same ids again, in the same order, at the same place, is a replay:
    it succeeds and writes nothing. Any other overlap with recorded ids is a conflict.
    """
    if existing:
        by_id = {row.id: row for row in existing}
        rows = [by_id.get(event.id) for event in events]
        first = rows[0]
        replay = (
            first is not None
            and all(
                row is not None and row.stream_id == stream_id and row.version == first.version + offset
                for offset, row in enumerate(rows)
            )
            and expected.allows(current=first.version - 1)
        )
        if replay and first is not None:
            return Decision(first.version, first.version + len(events) - 1, already_recorded=True)
        raise WrongExpectedVersion(stream_id=stream_id, expected=str(expected), actual=current)
    if not expected.allows(current=current):
        raise WrongExpectedVersion(stream_id=stream_id, expected=str(expected), actual=current)
    return Decision(current + 1, current + len(events), already_recorded=False)


class Direction(Enum):
    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True, slots=True)
class Page:
    """A page of events and where the next page starts (a version or a position)."""

    events: list[Any]
    next: int
    end: bool


def check_limit(limit: int) -> int:
    if limit < 0:
        raise InvalidRead("limit cannot be negative")
    return min(limit or DEFAULT_PAGE, MAX_PAGE)


def check_start(value: int, *, what: str) -> int:
    if value < 0:
        raise InvalidRead(f"{what} cannot be negative")
    if value > MAX_NUMBER:
        raise InvalidRead(f"{what} is beyond any event")
    return value


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int
    data: dict[str, Any]
    saved_at: Any  # datetime; Any keeps this module free of clock types


def check_snapshot(*, version: int, current: int, data: Any) -> None:
    if not isinstance(data, dict):
        raise InvalidAppend("snapshot data must be a JSON object")
    encoded = encode_json(data, what="the snapshot")
    check_json_text(encoded, what="the snapshot")
    if len(encoded) > MAX_EVENT_BYTES * 16:
        raise InvalidAppend(f"a snapshot may hold at most {MAX_EVENT_BYTES * 16} bytes")
    if not 1 <= version <= current:
        raise InvalidAppend(f"a snapshot version must be between 1 and the stream's version ({current})")
