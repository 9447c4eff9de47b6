"""gRPC ``eventstore.EventStore`` on port 50054 (contract: protos/eventstore.proto).

Domain errors map to status codes here and nowhere else; a version conflict is
FAILED_PRECONDITION with the actual version in the trailing metadata.
"""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from event_store.adapters.errors import EventStorageUnavailable
from event_store.domain.errors import EventStoreError, InvalidAppend, SnapshotNotFound, WrongExpectedVersion
from event_store.domain.model import Direction, ExpectedVersion, NewEvent, Page, Snapshot
from event_store.domain.store import EventStore
from interchange_common import tracing
from interchange_common.contracts import eventstore_pb2, eventstore_pb2_grpc
from interchange_common.events import RecordedEvent
from interchange_common.rpc import Context, status_codes

SERVICE_NAME = eventstore_pb2.DESCRIPTOR.services_by_name["EventStore"].full_name


def _timestamp(value: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_proto(event: RecordedEvent) -> eventstore_pb2.RecordedEvent:
    return eventstore_pb2.RecordedEvent(
        id=str(event.id),
        stream_id=event.stream_id,
        type=event.type,
        data=orjson.dumps(event.data),
        metadata=orjson.dumps(event.metadata),
        version=event.version,
        position=event.position or 0,
        recorded_at=_timestamp(event.recorded_at),
    )


def _snapshot(snapshot: Snapshot) -> eventstore_pb2.Snapshot:
    return eventstore_pb2.Snapshot(
        stream_id=snapshot.stream_id,
        version=snapshot.version,
        data=orjson.dumps(snapshot.data),
        saved_at=_timestamp(snapshot.saved_at),
    )


def _page(page: Page) -> eventstore_pb2.ReadResponse:
    return eventstore_pb2.ReadResponse(events=[to_proto(event) for event in page.events], next=page.next, end=page.end)


def _json_object(raw: bytes, *, what: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        # The standard parser keeps every integer exact (orjson would turn one past
        # 64 bits into a float); the domain then refuses what cannot be stored exactly.
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidAppend(f"{what} is not valid JSON") from e
    if not isinstance(value, dict):
        raise InvalidAppend(f"{what} must be a JSON object")
    return value


def _new_event(message: eventstore_pb2.NewEvent) -> NewEvent:
    try:
        event_id = uuid.UUID(message.id)
    except ValueError as e:
        raise InvalidAppend("event ids must be UUIDs") from e
    return NewEvent(
        id=event_id,
        type=message.type,
        data=_json_object(message.data, what="event data"),
        metadata=_json_object(message.metadata, what="event metadata"),
    )


def _expected(message: eventstore_pb2.ExpectedVersion) -> ExpectedVersion:
    match message.WhichOneof("value"):
        case "exact":
            return ExpectedVersion.exact(message.exact)
        case None:
            raise InvalidAppend("expected_version is required")
        case word:
            return ExpectedVersion.parse(word)


async def _abort(context: Context, error: Exception) -> NoReturn:
    if isinstance(error, WrongExpectedVersion):
        context.set_trailing_metadata((("actual-version", str(error.actual)),))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    if isinstance(error, SnapshotNotFound):
        await context.abort(grpc.StatusCode.NOT_FOUND, "the stream has no snapshot")
    if isinstance(error, EventStorageUnavailable):
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the event store is unavailable")
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    raise AssertionError("abort returned")  # abort always raises; this satisfies NoReturn


_status_codes = status_codes(errors=(EventStoreError, EventStorageUnavailable), abort=_abort)


class EventStoreServicer(eventstore_pb2_grpc.EventStoreServicer):
    def __init__(self, *, store: EventStore) -> None:
        self._store = store

    @_status_codes
    async def Append(self, request: eventstore_pb2.AppendRequest, context: Context) -> eventstore_pb2.AppendResponse:
        events = [_new_event(event) for event in request.events]
        # The span of this call, stored next to the correlation id: what the events
        # cause later (the relay's publish, the consumers) continues this trace.
        traceparent = tracing.current_traceparent()
        if traceparent is not None:
            for event in events:
                event.metadata.setdefault(tracing.TRACEPARENT, traceparent)
        decision = await self._store.append(
            stream_id=request.stream_id, expected=_expected(request.expected_version), events=events
        )
        return eventstore_pb2.AppendResponse(
            first_version=decision.first_version,
            last_version=decision.last_version,
            already_recorded=decision.already_recorded,
        )

    @_status_codes
    async def ReadStream(
        self, request: eventstore_pb2.ReadStreamRequest, context: Context
    ) -> eventstore_pb2.ReadResponse:
        direction = Direction.BACKWARD if request.direction == eventstore_pb2.BACKWARD else Direction.FORWARD
        page = await self._store.read_stream(
            stream_id=request.stream_id, start=request.from_version, direction=direction, limit=request.limit
        )
        return _page(page)

    @_status_codes
    async def ReadAll(self, request: eventstore_pb2.ReadAllRequest, context: Context) -> eventstore_pb2.ReadResponse:
        return _page(await self._store.read_all(start=request.from_position, limit=request.limit))

    @_status_codes
    async def SaveSnapshot(
        self, request: eventstore_pb2.SaveSnapshotRequest, context: Context
    ) -> eventstore_pb2.Snapshot:
        data = _json_object(request.data, what="snapshot data")
        return _snapshot(
            await self._store.save_snapshot(stream_id=request.stream_id, version=request.version, data=data)
        )

    @_status_codes
    async def LoadSnapshot(
        self, request: eventstore_pb2.LoadSnapshotRequest, context: Context
    ) -> eventstore_pb2.Snapshot:
        return _snapshot(await self._store.load_snapshot(stream_id=request.stream_id))

    async def Subscribe(
        self, request: eventstore_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[eventstore_pb2.RecordedEvent]:
        try:
            async for event in self._store.subscribe(stream_id=request.stream_id or None, start=request.start):
                yield to_proto(event)
        except (EventStoreError, EventStorageUnavailable) as e:
            await _abort(context, e)
