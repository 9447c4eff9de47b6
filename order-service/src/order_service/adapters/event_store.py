"""Orders in event-store, over gRPC: stream ``order-<id>``, state from the latest
snapshot plus the events after it, appends at the expected version, and a new
snapshot every ``snapshot_every`` events (best effort: a lost snapshot only costs
a longer read next time). Reads and appends share one circuit breaker and one retry
budget: the event store is one upstream."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import orjson
from google.protobuf.empty_pb2 import Empty

from interchange_common.contracts import eventstore_pb2 as pb
from interchange_common.contracts import eventstore_pb2_grpc as pb_grpc
from interchange_common.events import RecordedEvent
from interchange_common.projections import from_proto
from interchange_common.resilience import CircuitBreaker, CircuitOpen, RetryBudget
from interchange_common.rpc import call_within
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
_Reply = TypeVar("_Reply")


class _NoSnapshot(Exception):
    """LoadSnapshot's NOT_FOUND: the stream has no snapshot (yet)."""


_RETRIED_READS = frozenset({grpc.StatusCode.UNAVAILABLE})
# An append whose answer was lost may have committed: resending the same events is
# safe (the event store recognises their ids), so a deadline is retried too.
_RETRIED_APPENDS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


_PAGE = 500
_SEND_ATTEMPTS = 3


class EventStoreOrders:
    def __init__(
        self,
        *,
        channel: grpc.aio.Channel,
        breaker: CircuitBreaker | None = None,
        budget: RetryBudget | None = None,
        deadline_seconds: float = 2.0,
        snapshot_every: int = 50,
    ) -> None:
        self._stub = pb_grpc.EventStoreStub(channel)
        self._breaker = breaker
        self._budget = budget
        self._deadline = deadline_seconds
        self._snapshot_every = snapshot_every

    async def load(self, *, order_id: uuid.UUID) -> Order | None:
        stream = stream_id(order_id)
        state: Order | None = None
        try:
            snapshot = await self._read(self._stub.LoadSnapshot, pb.LoadSnapshotRequest(stream_id=stream))
            state = order_from_snapshot(orjson.loads(snapshot.data), version=snapshot.version)
        except _NoSnapshot:
            pass
        start = (state.version if state else 0) + 1
        while True:
            page = await self._read(
                self._stub.ReadStream, pb.ReadStreamRequest(stream_id=stream, from_version=start, limit=_PAGE)
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

    async def history(self, *, order_id: uuid.UUID) -> list[RecordedEvent]:
        events: list[RecordedEvent] = []
        start = 1
        while True:
            page = await self._read(
                self._stub.ReadStream,
                pb.ReadStreamRequest(stream_id=stream_id(order_id), from_version=start, limit=_PAGE),
            )
            events.extend(from_proto(message) for message in page.events)
            if page.end:
                return events
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

    async def _call(
        self, method: Callable[..., Awaitable[_Reply]], request: object, *, retry_on: frozenset[grpc.StatusCode]
    ) -> _Reply:
        """One call through the event store's breaker and retry budget; failing to get
        an answer is OrderStoreUnavailable, the event store's answers are AioRpcErrors."""
        try:
            return await call_within(
                method,
                request,
                deadline=self._deadline,
                retry_on=retry_on,
                budget=self._budget,
                breaker=self._breaker,
            )
        except CircuitOpen as e:
            raise OrderStoreUnavailable("the event store is failing; not asked again yet") from e
        except TimeoutError as e:
            raise OrderStoreUnavailable("the event store did not answer within the deadline") from e

    async def _read(self, method: Callable[..., Awaitable[_Reply]], request: object) -> _Reply:
        """A read: safe to repeat, so retried while the event store is unavailable."""
        try:
            return await self._call(method, request, retry_on=_RETRIED_READS)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise _NoSnapshot from e
            raise OrderStoreUnavailable(f"the event store: {e.code().name}") from e

    async def _append(self, request: pb.AppendRequest) -> pb.AppendResponse:
        """Append; when the answer is lost (deadline, unavailable), send the very same
        request again: the event ids make it safe, and a first attempt that did commit
        comes back as already recorded instead of a duplicate or a false conflict."""
        try:
            return await self._call(self._stub.Append, request, retry_on=_RETRIED_APPENDS)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise ConcurrencyConflict(str(e.details())) from e
            raise OrderStoreUnavailable(f"the event store: {e.code().name}") from e

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
