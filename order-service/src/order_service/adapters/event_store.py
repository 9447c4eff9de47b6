"""Orders in event-store, over gRPC: stream ``order-<id>``, state from the latest
snapshot plus the events after it, appends at the expected version, and a new
snapshot every ``snapshot_every`` events (best effort: a lost snapshot only costs
a longer read next time)."""

import logging
import uuid

import grpc
import orjson
from google.protobuf.empty_pb2 import Empty

from interchange_common.contracts import eventstore_pb2 as pb
from interchange_common.contracts import eventstore_pb2_grpc as pb_grpc
from order_service.domain.errors import ConcurrencyConflict, OrderStoreUnavailable
from order_service.domain.order import (
    Event,
    Order,
    event_data,
    event_from_stored,
    event_metadata,
    evolve,
    fold,
    order_from_snapshot,
    snapshot_data,
    stream_id,
)

_log = logging.getLogger(__name__)
_PAGE = 500
_SEND_ATTEMPTS = 3


class EventStoreOrders:
    def __init__(self, *, channel: grpc.aio.Channel, deadline_seconds: float = 2.0, snapshot_every: int = 50) -> None:
        self._stub = pb_grpc.EventStoreStub(channel)
        self._deadline = deadline_seconds
        self._snapshot_every = snapshot_every

    async def load(self, *, order_id: uuid.UUID) -> Order | None:
        stream = stream_id(order_id)
        state: Order | None = None
        try:
            snapshot = await self._stub.LoadSnapshot(pb.LoadSnapshotRequest(stream_id=stream), timeout=self._deadline)
            state = order_from_snapshot(orjson.loads(snapshot.data), version=snapshot.version)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
        start = (state.version if state else 0) + 1
        while True:
            page = await self._stub.ReadStream(
                pb.ReadStreamRequest(stream_id=stream, from_version=start, limit=_PAGE), timeout=self._deadline
            )
            state = fold(
                [
                    (
                        message.version,
                        event_from_stored(
                            event_id=uuid.UUID(message.id),
                            type_=message.type,
                            data=orjson.loads(message.data),
                            metadata=orjson.loads(message.metadata),
                        ),
                    )
                    for message in page.events
                ],
                start=state,
            )
            if page.end:
                return state
            start = page.next

    async def save(self, *, order: Order | None, events: list[Event], order_id: uuid.UUID) -> Order:
        expected = order.version if order else 0
        request = pb.AppendRequest(
            stream_id=stream_id(order_id),
            expected_version=pb.ExpectedVersion(exact=expected) if expected else pb.ExpectedVersion(no_stream=Empty()),
            events=[
                pb.NewEvent(
                    id=str(event.id),
                    type=event.type,
                    data=orjson.dumps(event_data(event)),
                    metadata=orjson.dumps(event_metadata(event)),
                )
                for event in events
            ],
        )
        reply = await self._append(request)
        state = order
        for offset, event in enumerate(events):
            state = evolve(state, event, version=reply.first_version + offset)
        assert state is not None, "save() needs at least one event"
        if reply.last_version // self._snapshot_every > expected // self._snapshot_every:
            await self._snapshot(state)
        return state

    async def _append(self, request: pb.AppendRequest) -> pb.AppendResponse:
        """Append; when the answer is lost (deadline, unavailable), send the very same
        request again: the event ids make it safe, and a first attempt that did commit
        comes back as already recorded instead of a duplicate or a false conflict."""
        for attempt in range(_SEND_ATTEMPTS):
            try:
                return await self._stub.Append(request, timeout=self._deadline)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise ConcurrencyConflict(str(e.details())) from e
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if attempt == _SEND_ATTEMPTS - 1:
                    raise OrderStoreUnavailable("the event store did not answer") from e
        raise AssertionError("unreachable")

    async def _snapshot(self, order: Order) -> None:
        try:
            await self._stub.SaveSnapshot(
                pb.SaveSnapshotRequest(
                    stream_id=stream_id(order.id), version=order.version, data=orjson.dumps(snapshot_data(order))
                ),
                timeout=self._deadline,
            )
        except grpc.aio.AioRpcError as e:
            _log.warning("snapshot not saved", extra={"order_id": str(order.id), "code": e.code().name})
