"""Projections: events in global order into a read model, each exactly once.

    EventSource        where events come from: catch-up then live, from a position
                       (GrpcEventSource reads event-store's Subscribe)
    ReadAhead          a subscription read ahead into a bounded buffer, taken in
                       batches of whatever has come
    ProjectionRunner   applies the events in batches: every event that has come (up to
                       ``max_batch``) goes to the handler in one database transaction,
                       which also moves the checkpoint, so the read model and the
                       checkpoint never disagree: a crash anywhere re-applies nothing
                       and skips nothing. The checkpoint row is locked for the
                       transaction, so two runners of one projection cannot both
                       apply an event; the one that finds a batch applied by the other
                       then waits a little (``linger_seconds``) to go over more events
                       at once. ``rebuild`` clears the model and starts from 0.
                       After each batch it sets how far behind it is: the events
                       waiting in the read-ahead buffer, and the age of the last
                       event gone over (0 once none waits).
    ParkedEvents       a poison event, parked so that it cannot stall the projection:
                       a batch whose handler fails is tried again after each of
                       ``retry_delays``; then its events one by one, each in a savepoint,
                       each tried as often; one that still fails alone is parked (with
                       its error) in the transaction that moves the checkpoint past it,
                       so a crash loses nothing and parks nothing twice. An error that
                       is not the event's (the database unreachable, a deadlock, a
                       timeout, a schema the handler does not expect) never parks
                       anything: it ends the run at once, as any crash (run_forever
                       starts it again). A handler that fails on every event parks every
                       event: the alert on ``projection_parked_events`` says so. Parked
                       events are listed, replayed (the handler applied to the event
                       again now, out of order; gone once it succeeds) or skipped.

The owning service's migrations create ``projection_checkpoints`` and
``projection_parked_events`` (see ``checkpoints`` and ``parked_events``).
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

import grpc
import orjson
from prometheus_client import Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from interchange_common import tracing
from interchange_common.contracts import eventstore_pb2, eventstore_pb2_grpc
from interchange_common.database import is_unavailable
from interchange_common.errors import InterchangeCommonError
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
# The whole event is kept, so that a replay needs nothing but this row.
parked_events = Table(
    "projection_parked_events",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("projection", Text, nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("stream_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("parked_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("projection", "position", name="uq_projection_parked_events_position"),
)

# Applies events, in the order given, inside the runner's transaction.
Handler = Callable[[AsyncConnection, Sequence[RecordedEvent]], Awaitable[None]]
Reset = Callable[[AsyncConnection], Awaitable[None]]
MAX_BATCH = 500
LINGER_SECONDS = 0.5
# A failing batch is tried again after each of these; then each of its events alone
# as often. Short: the checkpoint stays locked meanwhile.
RETRY_DELAYS: tuple[float, ...] = (0.1, 0.5)
MAX_ERROR_LENGTH = 2000
LAG_SECONDS = Gauge(
    "projection_lag_seconds", "Age of the last event the projection went over (0: none waits)", ["projection"]
)
LAG_EVENTS = Gauge("projection_lag_events", "Events received but not yet applied (read ahead)", ["projection"])
PARKED = Gauge(
    "projection_parked_events", "Events the projection parked because its handler kept failing on them", ["projection"]
)


class ProjectionError(InterchangeCommonError):
    """Base of what the parked events' operations raise."""


class ParkedEventNotFound(ProjectionError):
    """No parked event of this projection has this id (never parked, replayed or skipped)."""


class ReplayFailed(ProjectionError):
    """The handler failed on the parked event again; it stays parked, with this error."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


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


class ReadAhead:
    """``events`` read by a task of its own into a buffer of ``size`` events, for the
    length of an ``async with`` block. The reader waits while the buffer is full, so
    a slow consumer slows the subscription down instead of piling events up.

    ``take`` hands over every event that has come, at most ``most``, waiting only for
    the first (with ``linger``, that many seconds more, unless ``most`` come sooner);
    once the events have ended it returns an empty list, or raises what ended them."""

    def __init__(self, events: AsyncGenerator[RecordedEvent, None], *, size: int) -> None:
        self._events = events
        # None marks the end (the reader's error, if any, in _error).
        self._buffer: asyncio.Queue[RecordedEvent | None] = asyncio.Queue(maxsize=size)
        self._error: Exception | None = None
        self._end_queued = False
        self._ended = False
        self._reader: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many events have come and wait to be taken."""
        return self._buffer.qsize() - (1 if self._end_queued and not self._ended else 0)

    async def __aenter__(self) -> "ReadAhead":
        self._reader = asyncio.create_task(self._read(), name="read-ahead")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            # Our own cancellation, arriving here, leaves the generator to its finalizer.
            await asyncio.wait({self._reader})
        await self._events.aclose()

    async def _read(self) -> None:
        try:
            async for event in self._events:
                await self._buffer.put(event)
        except Exception as e:  # the consumer raises it, after the events that came before
            self._error = e
        await self._buffer.put(None)
        self._end_queued = True

    async def take(self, *, most: int, linger: float = 0.0) -> list[RecordedEvent]:
        batch: list[RecordedEvent] = []
        if self._ended:
            return self._end()
        event = await self._buffer.get()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(linger or None):
                while event is not None:
                    batch.append(event)
                    if len(batch) >= most or (self._buffer.empty() and not linger):
                        return batch
                    event = await self._buffer.get()
                self._ended = True
        return batch or self._end()

    def _end(self) -> list[RecordedEvent]:
        if self._error is not None:
            raise self._error
        return []


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a projection's handler kept failing on, as parked: the error of its
    last try, and how many times the handler was given it."""

    id: uuid.UUID
    projection: str
    event: RecordedEvent
    error: str
    attempts: int
    parked_at: datetime


class ParkedEvents:
    """The events ``name``'s runner parked, in its database: listed, replayed with
    ``handler`` or skipped, and counted on ``projection_parked_events``. Each instance
    of a service counts them after its own changes; ``refresh`` (now and then) also
    sees the other instances'."""

    def __init__(self, *, name: str, engine: AsyncEngine, handler: Handler) -> None:
        self._name = name
        self._engine = engine
        self._handler = handler
        self._ours = parked_events.c.projection == name
        self._count = select(func.count()).select_from(parked_events).where(self._ours)
        self._gauge = PARKED.labels(projection=name)

    async def refresh(self) -> int:
        """Count the parked events, and say so on the gauge."""
        async with self._engine.connect() as conn:
            count = int(await conn.scalar(self._count) or 0)
        self._gauge.set(count)
        return count

    async def list(self, *, offset: int, limit: int) -> tuple[list[ParkedEvent], int]:
        """A page of the parked events, in the order they came, and how many there are."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(parked_events)
                    .where(self._ours)
                    .order_by(parked_events.c.position)
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
            total = int(await conn.scalar(self._count) or 0)
        return [_parked(row) for row in rows], total

    async def replay(self, *, parked_id: uuid.UUID) -> ParkedEvent:
        """Apply the handler to the parked event now: gone once that succeeds (in the
        same transaction); ReplayFailed, and kept with the new error, if it fails. The
        row stays locked meanwhile, so two replays of one event apply it once."""
        failed: ReplayFailed | None = None
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(parked_events).where(self._ours, parked_events.c.id == parked_id).with_for_update()
                )
            ).first()
            if row is None:
                raise ParkedEventNotFound(str(parked_id))
            parked = _parked(row)
            try:
                async with conn.begin_nested():
                    await self._handler(conn, [parked.event])
            except Exception as e:
                if not _may_be_the_events(e):
                    raise  # nothing learned about the event: it stays as it was
                failed = ReplayFailed(_describe(e))
                await conn.execute(
                    update(parked_events)
                    .where(parked_events.c.id == parked_id)
                    .values(error=failed.error, attempts=parked_events.c.attempts + 1)
                )
            else:
                await conn.execute(delete(parked_events).where(parked_events.c.id == parked_id))
        if failed is not None:
            _log.warning("parked event replayed and failed again", extra=_fields(parked, error=failed.error))
            raise failed
        _log.info("parked event replayed", extra=_fields(parked))
        await self.refresh()
        return parked

    async def skip(self, *, parked_id: uuid.UUID) -> ParkedEvent:
        """Discard the parked event: the projection goes without it."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    delete(parked_events).where(self._ours, parked_events.c.id == parked_id).returning(*parked_events.c)
                )
            ).first()
        if row is None:
            raise ParkedEventNotFound(str(parked_id))
        parked = _parked(row)
        _log.info("parked event skipped", extra=_fields(parked))
        await self.refresh()
        return parked

    async def park(self, conn: AsyncConnection, *, event: RecordedEvent, error: str, attempts: int) -> ParkedEvent:
        """Record ``event`` as parked, in the caller's transaction (the one that moves
        the checkpoint past it). Parked already (the checkpoint was set back by hand,
        not by ``rebuild``): that row, with the new error."""
        statement = insert(parked_events).values(
            id=uuid.uuid4(),
            projection=self._name,
            event_id=event.id,
            position=_position(event),
            stream_id=event.stream_id,
            type=event.type,
            version=event.version,
            data=event.data,
            metadata=event.metadata,
            recorded_at=event.recorded_at,
            error=error,
            attempts=attempts,
            parked_at=datetime.now(UTC),
        )
        row = (
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["projection", "position"],
                    set_={name: statement.excluded[name] for name in ("error", "attempts", "parked_at")},
                ).returning(*parked_events.c)
            )
        ).one()
        return _parked(row)

    async def clear(self, conn: AsyncConnection) -> None:
        """Forget every parked event of the projection, in the caller's transaction (a
        rebuild goes over them again)."""
        await conn.execute(delete(parked_events).where(self._ours))


def _parked(row: Any) -> ParkedEvent:
    return ParkedEvent(
        id=row.id,
        projection=row.projection,
        event=RecordedEvent(
            id=row.event_id,
            stream_id=row.stream_id,
            type=row.type,
            data=row.data,
            metadata=row.metadata,
            version=row.version,
            position=row.position,
            recorded_at=row.recorded_at,
        ),
        error=row.error,
        attempts=row.attempts,
        parked_at=row.parked_at,
    )


def _fields(parked: ParkedEvent, **more: object) -> dict[str, object]:
    """A parked event's log fields."""
    return {
        "projection": parked.projection,
        "parked_id": str(parked.id),
        "event_id": str(parked.event.id),
        "position": parked.event.position,
        "stream_id": parked.event.stream_id,
        "event_type": parked.event.type,
        **more,
    }


class ProjectionRunner:
    def __init__(
        self,
        *,
        name: str,
        engine: AsyncEngine,
        source: EventSource,
        handler: Handler,
        max_batch: int = MAX_BATCH,
        linger_seconds: float = LINGER_SECONDS,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        if max_batch < 1:
            raise ValueError("a batch holds at least one event")
        self._name = name
        self._engine = engine
        self._source = source
        self._handler = handler
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._retry_delays = tuple(retry_delays)
        self._create = insert(checkpoints).values(name=name, position=0).on_conflict_do_nothing(index_elements=["name"])
        self._read = select(checkpoints.c.position).where(checkpoints.c.name == name)
        self._lock = self._read.with_for_update()
        self._move = update(checkpoints).where(checkpoints.c.name == name).values(position=bindparam("reached"))
        self._handled_up_to = 0
        self._lag_seconds = LAG_SECONDS.labels(projection=name)
        self._lag_events = LAG_EVENTS.labels(projection=name)
        self.parked = ParkedEvents(name=name, engine=engine, handler=handler)
        # Fires after each batch is committed (or found applied by another runner):
        # whoever waits for the read model to reach a point waits on it (no polling).
        self.applied = Signal()

    @property
    def handled_up_to(self) -> int:
        """The global position of the last event this runner has gone over: applied
        by it, or found applied by another runner (0: none yet)."""
        return self._handled_up_to

    async def position(self) -> int:
        """The global position of the last event applied (0: none yet)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(self._read)
        return int(found or 0)

    async def run(self, *, stop_after: int | None = None) -> int:
        """Apply events as they come; returns after ``stop_after`` events (None: never),
        parked ones included.

        A runner that finds its whole batch applied by another runner of the projection
        collects events for ``linger_seconds`` before it tries again: of two runners, one
        applies as events come, the other goes over them in large batches now and then,
        and takes over within that time if the first stops."""
        applied = 0
        while stop_after is None or applied < stop_after:
            start = await self._start()
            async with ReadAhead(self._source.subscribe(start=start + 1), size=self._max_batch) as events:
                linger = 0.0
                while stop_after is None or applied < stop_after:
                    batch = await events.take(most=self._max_batch, linger=linger)
                    if not batch:
                        break  # the subscription ended: subscribe again
                    outcome = await self._apply(batch, most=None if stop_after is None else stop_after - applied)
                    applied += outcome.applied
                    self._note_lag(last=batch[-1], waiting=events.waiting)
                    if not outcome.in_step:
                        break  # the checkpoint moved back (a rebuild): read again from there
                    linger = self._linger if outcome.applied_by_another else 0.0
        return applied

    def _note_lag(self, *, last: RecordedEvent, waiting: int) -> None:
        self._lag_events.set(waiting)
        self._lag_seconds.set(max(0.0, (datetime.now(UTC) - last.recorded_at).total_seconds()) if waiting else 0.0)

    async def _start(self) -> int:
        """The checkpoint, created at 0 if the projection has none yet."""
        async with self._engine.begin() as conn:
            await conn.execute(self._create)
            found = await conn.scalar(self._read)
        await self.parked.refresh()
        return int(found or 0)

    async def _apply(self, batch: Sequence[RecordedEvent], *, most: int | None) -> "_Outcome":
        """Apply, in one transaction, the events of ``batch`` that are not applied yet
        (at most ``most``). When the handler keeps failing on them, apply them one by
        one and park those it fails on alone."""
        positions = [_position(event) for event in batch]
        # One span for the batch, linked to the span that recorded each event (the
        # batch serves many requests; the SDK keeps the first 128 links).
        links = tracing.links_to(event.metadata.get(tracing.TRACEPARENT) for event in batch)
        with tracing.span(f"project {self._name}", root=True, links=links):
            for delay in (None, *self._retry_delays):
                if delay is not None:
                    await asyncio.sleep(delay)
                try:
                    return await self._apply_together(batch, positions, most=most)
                except _HandlerFailed as failed:
                    _log.warning(
                        "projection batch failed",
                        extra={"projection": self._name, "error": _describe(failed.error), "events": len(batch)},
                    )
            return await self._apply_one_by_one(batch, positions, most=most)

    async def _apply_together(
        self, batch: Sequence[RecordedEvent], positions: Sequence[int], *, most: int | None
    ) -> "_Outcome":
        async with self._engine.begin() as conn:
            # Locked until commit: another runner of this projection waits here, then
            # sees the new position and skips what this one applied.
            current = await conn.scalar(self._lock)
            if current is None:
                return _Outcome(applied=0, in_step=False, applied_by_another=False)  # _start creates the row again
            todo, in_step = _following(batch, positions, after=int(current), most=most)
            if todo:
                try:
                    await self._handler(conn, todo)
                except Exception as e:
                    if not _may_be_the_events(e):
                        raise  # as any crash: run_forever subscribes again after a pause
                    raise _HandlerFailed(e) from e
                await conn.execute(self._move, {"reached": _position(todo[-1])})
        return self._gone_over(positions, todo=todo, current=int(current), in_step=in_step)

    async def _apply_one_by_one(
        self, batch: Sequence[RecordedEvent], positions: Sequence[int], *, most: int | None
    ) -> "_Outcome":
        """The events of ``batch`` in one transaction still, each in a savepoint of its
        own and tried as often as the batch was; one the handler fails on alone is
        parked, and the checkpoint moves past it with the others."""
        parked: list[ParkedEvent] = []
        async with self._engine.begin() as conn:
            current = await conn.scalar(self._lock)
            if current is None:
                return _Outcome(applied=0, in_step=False, applied_by_another=False)
            todo, in_step = _following(batch, positions, after=int(current), most=most)
            for event in todo:
                error = await self._apply_alone(conn, event)
                if error is not None:
                    # Every try of the batch, then as many of the event alone.
                    tries = 2 * (len(self._retry_delays) + 1)
                    parked.append(await self.parked.park(conn, event=event, error=error, attempts=tries))
            if todo:
                await conn.execute(self._move, {"reached": _position(todo[-1])})
        for each in parked:
            _log.warning(
                "projection event parked",
                extra=_fields(each, error=each.error, attempts=each.attempts),
            )
        if parked:
            await self.parked.refresh()
        return self._gone_over(positions, todo=todo, current=int(current), in_step=in_step)

    async def _apply_alone(self, conn: AsyncConnection, event: RecordedEvent) -> str | None:
        """Apply ``event`` in a savepoint, trying again after each of the retry delays;
        None once it is applied, else what went wrong the last time."""
        last: Exception | None = None
        for delay in (None, *self._retry_delays):
            if delay is not None:
                await asyncio.sleep(delay)
            try:
                async with conn.begin_nested():
                    await self._handler(conn, [event])
            except Exception as e:
                if not _may_be_the_events(e):
                    raise
                last = e
            else:
                return None
        return None if last is None else _describe(last)

    def _gone_over(
        self, positions: Sequence[int], *, todo: Sequence[RecordedEvent], current: int, in_step: bool
    ) -> "_Outcome":
        reached = _position(todo[-1]) if todo else current
        gone_over = [position for position in positions if position <= reached]
        if gone_over:
            self._handled_up_to = max(self._handled_up_to, *gone_over)
            # Skipped events too: readers waiting on this runner must hear of them.
            self.applied.fire()
        return _Outcome(applied=len(todo), in_step=in_step, applied_by_another=not todo and bool(gone_over))

    async def rebuild(self, *, reset: Reset) -> None:
        """Empty the read model (``reset``), the parked events and the checkpoint
        together; ``run`` then applies everything again from position 1."""
        async with self._engine.begin() as conn:
            await reset(conn)
            await self.parked.clear(conn)
            await conn.execute(
                insert(checkpoints)
                .values(name=self._name, position=0)
                .on_conflict_do_update(index_elements=["name"], set_={"position": 0})
            )
        await self.parked.refresh()
        _log.info("projection reset", extra={"projection": self._name})


class _HandlerFailed(Exception):
    """The handler raised ``error``, which may be the events' fault."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# SQLSTATEs that say nothing about the event: the database could not do the work now
# (database.is_unavailable), the transaction was in the way (class 40: serialization
# failure, deadlock), a statement was cancelled or timed out (57014), a lock or object
# was not free (55P03, 55006), the server failed (58, XX), or the schema and grants are
# not what the handler expects (42: a deployment's problem, which parking every event
# would only hide).
_NOT_THE_EVENTS_CLASSES = frozenset({"40", "42", "58", "XX"})
_NOT_THE_EVENTS_STATES = frozenset({"57014", "55P03", "55006"})


def _sqlstate(error: BaseException) -> str | None:
    code = getattr(getattr(error, "orig", None), "sqlstate", None)
    return code if isinstance(code, str) else None


def _may_be_the_events(error: Exception) -> bool:
    """Whether ``error`` may be the fault of the events the handler was given (their
    data, or a bug they trigger), so that trying them alone, and parking one, can help."""
    if is_unavailable(error) or isinstance(error, InterfaceError):
        return False
    code = _sqlstate(error)
    return code is None or (code[:2] not in _NOT_THE_EVENTS_CLASSES and code not in _NOT_THE_EVENTS_STATES)


def _describe(error: Exception) -> str:
    """The error as a parked event keeps it: its class and message; for a driver error,
    PostgreSQL's own error, SQLSTATE and message, without the statement and its
    parameters (a batch's parameters hold other events' data)."""
    if isinstance(error, DBAPIError) and error.orig is not None:
        cause = error.orig.__cause__ or error.orig
        text = f"{type(cause).__name__} (SQLSTATE {_sqlstate(error)}): {error.orig}"
    else:
        text = f"{type(error).__name__}: {error}"
    return text[:MAX_ERROR_LENGTH]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What became of a batch: how many of its events this runner applied; False for
    ``in_step`` when the batch does not go on from the checkpoint (the subscription
    must start again from there); ``applied_by_another`` when another runner had
    applied the whole batch already."""

    applied: int
    in_step: bool
    applied_by_another: bool


def _position(event: RecordedEvent) -> int:
    if event.position is None:
        raise ValueError("a projection needs events with global positions")
    return event.position


def _following(
    batch: Sequence[RecordedEvent], positions: Sequence[int], *, after: int, most: int | None
) -> tuple[list[RecordedEvent], bool]:
    """The events of ``batch`` that follow position ``after`` one by one (at most
    ``most``), and False if a gap comes first: positions are dense, so a gap means
    that the checkpoint went back under the subscription (a rebuild)."""
    following: list[RecordedEvent] = []
    for event, position in zip(batch, positions, strict=True):
        if position <= after:
            continue  # applied already
        if most is not None and len(following) >= most:
            break
        if position != after + 1:
            return following, False
        following.append(event)
        after = position
    return following, True
