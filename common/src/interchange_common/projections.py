"""Projections: events in global order into a read model, each exactly once.

    EventSource        where events come from: catch-up then live, from a position
                       (GrpcEventSource reads event-store's Subscribe)
    ProjectionRunner   applies each event with the handler and moves the checkpoint
                       in the same database transaction, so the read model and the
                       checkpoint never disagree: a crash anywhere re-applies nothing
                       and skips nothing. The checkpoint row is locked for the
                       transaction, so two runners of one projection cannot both
                       apply an event. ``rebuild`` clears the model and starts from 0.

The owning service's migrations create ``projection_checkpoints`` (see ``checkpoints``).
"""

import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC
from typing import Protocol

import grpc
import orjson
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from interchange_common.contracts import eventstore_pb2, eventstore_pb2_grpc
from interchange_common.events import RecordedEvent
from interchange_common.signal import Signal

_log = logging.getLogger(__name__)

metadata = MetaData()
checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
)

Handler = Callable[[AsyncConnection, RecordedEvent], Awaitable[None]]
Reset = Callable[[AsyncConnection], Awaitable[None]]


class _Resubscribe(Exception):
    """The checkpoint is behind the event in hand: subscribe again from the checkpoint."""


class EventSource(Protocol):
    def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        """Every event from global position ``start`` on, then new ones as they come."""


class GrpcEventSource:
    """event-store's Subscribe over gRPC (the channel carries the service token)."""

    def __init__(self, *, channel: grpc.aio.Channel) -> None:
        self._stub = eventstore_pb2_grpc.EventStoreStub(channel)

    async def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        async for message in self._stub.Subscribe(eventstore_pb2.SubscribeRequest(start=start)):
            yield from_proto(message)


def from_proto(message: eventstore_pb2.RecordedEvent) -> RecordedEvent:
    return RecordedEvent(
        id=uuid.UUID(message.id),
        stream_id=message.stream_id,
        type=message.type,
        data=orjson.loads(message.data) if message.data else {},
        metadata=orjson.loads(message.metadata) if message.metadata else {},
        version=message.version,
        position=message.position or None,
        recorded_at=message.recorded_at.ToDatetime(tzinfo=UTC),
    )


class ProjectionRunner:
    def __init__(self, *, name: str, engine: AsyncEngine, source: EventSource, handler: Handler) -> None:
        self._name = name
        self._engine = engine
        self._source = source
        self._handler = handler
        # Fires after each applied event is committed: whoever waits for the read
        # model to reach a point waits on it (no polling).
        self.applied = Signal()

    async def position(self) -> int:
        """The global position of the last event applied (0: none yet)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(select(checkpoints.c.position).where(checkpoints.c.name == self._name))
        return int(found or 0)

    async def run(self, *, stop_after: int | None = None) -> int:
        """Apply events as they come; returns after ``stop_after`` events (None: never)."""
        applied = 0
        while True:
            async with contextlib.aclosing(self._source.subscribe(start=await self.position() + 1)) as events:
                async for event in events:
                    try:
                        if await self._apply(event):
                            applied += 1
                    except _Resubscribe:
                        break  # the checkpoint moved back (a rebuild): read again from there
                    if stop_after is not None and applied >= stop_after:
                        return applied

    async def _apply(self, event: RecordedEvent) -> bool:
        if event.position is None:
            raise ValueError("a projection needs events with global positions")
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(checkpoints).values(name=self._name, position=0).on_conflict_do_nothing(index_elements=["name"])
            )
            # Locked until commit: another runner of this projection waits here, then
            # sees the new position and skips the event.
            current = await conn.scalar(
                select(checkpoints.c.position).where(checkpoints.c.name == self._name).with_for_update()
            )
            if event.position <= int(current or 0):
                # Another runner applied it: readers waiting on this one must hear too.
                self.applied.fire()
                return False
            if event.position != int(current or 0) + 1:
                # Positions are dense: a gap means the checkpoint went back under us.
                raise _Resubscribe
            await self._handler(conn, event)
            await conn.execute(
                update(checkpoints).where(checkpoints.c.name == self._name).values(position=event.position)
            )
        self.applied.fire()
        return True

    async def rebuild(self, *, reset: Reset) -> None:
        """Empty the read model (``reset``) and the checkpoint together; ``run`` then
        applies everything again from position 1."""
        async with self._engine.begin() as conn:
            await reset(conn)
            await conn.execute(
                insert(checkpoints)
                .values(name=self._name, position=0)
                .on_conflict_do_update(index_elements=["name"], set_={"position": 0})
            )
        _log.info("projection reset", extra={"projection": self._name})
