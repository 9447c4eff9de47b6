"""Poison events: a ProjectionRunner whose handler keeps failing on one event parks
it, with its error, in the transaction that moves the checkpoint past it, and goes
on; an admin replays or skips it later. A failure that passes parks nothing, and
neither does one that is not the event's. The checkpoints, the parked events and the
read model are in a real PostgreSQL database; the events come from a list."""

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import throwaway_database
from interchange_common.events import RecordedEvent
from interchange_common.projections import ParkedEventNotFound, ProjectionRunner, ReplayFailed
from interchange_common.projections import metadata as projection_metadata

pytestmark = pytest.mark.integration
DELAYS = (0.01, 0.02)  # three tries of the batch, then three of each event alone
TRIES = 2 * (len(DELAYS) + 1)

read_model = MetaData()
applied = Table(
    "applied_events",
    read_model,
    Column("projection", Text, primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("value", Text, nullable=False),
)


@pytest.fixture(scope="module")
async def engine(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_projpark") as url:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(projection_metadata.create_all)
            await conn.run_sync(read_model.create_all)
        yield engine
        await engine.dispose()


def numbered(count: int, **data_at: dict[str, object]) -> list[RecordedEvent]:
    """Events 1 … ``count``; ``data_at`` gives some of them other data (by "e<position>")."""
    return [
        RecordedEvent(
            id=uuid.uuid4(),
            stream_id=f"thing-{position}",
            type="thing.happened",
            data=data_at.get(f"e{position}", {"value": f"v{position}"}),
            metadata={},
            version=1,
            position=position,
            recorded_at=datetime.now(UTC),
        )
        for position in range(1, count + 1)
    ]


class Listed:
    """The events given, all there at once; then nothing more comes."""

    def __init__(self, events: Sequence[RecordedEvent]) -> None:
        self._events = events

    async def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        for event in self._events:
            if event.position is not None and event.position >= start:
                yield event
        await asyncio.Event().wait()


class Handler:
    """Writes each event's ``value`` into the read model, after ``fail_on`` has had its
    say: given a batch and the events' positions, what to raise (None: nothing)."""

    def __init__(self, name: str, fail_on=lambda positions: None) -> None:
        self._name = name
        self._fail_on = fail_on
        self.batches: list[list[int]] = []

    async def __call__(self, conn, events):
        positions = [event.position for event in events]
        self.batches.append(positions)
        for event in events:
            await conn.execute(
                applied.insert().values(projection=self._name, position=event.position, value=event.data.get("value"))
            )
        error = self._fail_on(positions)
        if error is not None:
            raise error

    def tries_of(self, position: int) -> int:
        return sum(position in batch for batch in self.batches)


def failing_on(position: int, *, times: int | None = None):
    """Raise whenever ``position`` is among the events (only ``times`` times, if given)."""
    failed = 0

    def fail_on(positions):
        nonlocal failed
        if position in positions and (times is None or failed < times):
            failed += 1
            return ValueError(f"cannot apply event {position}")
        return None

    return fail_on


def runner(engine, name, events, handler, **options):
    return ProjectionRunner(
        name=name, engine=engine, source=Listed(events), handler=handler, retry_delays=DELAYS, **options
    )


async def applied_positions(engine, name):
    async with engine.connect() as conn:
        rows = await conn.execute(select(applied.c.position).where(applied.c.projection == name))
        return sorted(row.position for row in rows)


def parked_gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("projection_parked_events", {"projection": name})


def new_name() -> str:
    return f"park-{uuid.uuid4().hex[:6]}"


async def test_an_event_the_handler_keeps_failing_on_is_parked_and_the_projection_goes_on(engine, caplog):
    name, events = new_name(), numbered(5)
    handler = Handler(name, failing_on(3))
    projection = runner(engine, name, events, handler)
    with caplog.at_level(logging.WARNING, logger="interchange_common.projections"):
        assert await projection.run(stop_after=5) == 5
    assert handler.batches[0] == [1, 2, 3, 4, 5]  # one batch: the others were applied beside it
    assert await applied_positions(engine, name) == [1, 2, 4, 5]
    assert await projection.position() == 5
    assert handler.tries_of(3) == TRIES
    [parked], total = await projection.parked.list(offset=0, limit=10)
    assert total == 1
    assert parked.event == events[2]  # the whole event: id, position, stream, type, data
    assert (parked.projection, parked.error, parked.attempts) == (name, "ValueError: cannot apply event 3", TRIES)
    assert (datetime.now(UTC) - parked.parked_at).total_seconds() < 60
    assert parked_gauge(name) == 1
    [line] = [record for record in caplog.records if "parked" in record.getMessage()]
    assert line.levelno == logging.WARNING
    assert (line.projection, line.event_id, line.position) == (name, str(events[2].id), 3)
    assert line.error == "ValueError: cannot apply event 3"


async def test_a_restart_does_not_park_the_event_again(engine):
    name, events = new_name(), numbered(6)
    handler = Handler(name, failing_on(3))
    assert await runner(engine, name, events[:5], handler).run(stop_after=5) == 5
    tries = handler.tries_of(3)
    again = runner(engine, name, events, handler)
    assert await again.run(stop_after=1) == 1  # event 6: the checkpoint was past 3
    assert handler.tries_of(3) == tries
    assert await applied_positions(engine, name) == [1, 2, 4, 5, 6]
    assert (await again.parked.list(offset=0, limit=10))[1] == 1
    assert parked_gauge(name) == 1


async def test_a_failure_that_passes_parks_nothing(engine):
    name, events = new_name(), numbered(5)
    handler = Handler(name, failing_on(3, times=2))
    projection = runner(engine, name, events, handler)
    assert await projection.run(stop_after=5) == 5
    assert await applied_positions(engine, name) == [1, 2, 3, 4, 5]
    assert handler.tries_of(3) == 3  # the batch, twice failing, then applied
    assert await projection.parked.list(offset=0, limit=10) == ([], 0)
    assert parked_gauge(name) == 0


async def test_an_event_the_database_refuses_is_parked_and_the_rest_of_its_batch_applied(engine):
    # Event 2 has no value: the read model's NOT NULL refuses it, and PostgreSQL
    # aborts the transaction; a savepoint per event keeps the others.
    name, events = new_name(), numbered(4, e2={"other": "x"})
    projection = runner(engine, name, events, Handler(name))
    assert await projection.run(stop_after=4) == 4
    assert await applied_positions(engine, name) == [1, 3, 4]
    [parked], _ = await projection.parked.list(offset=0, limit=10)
    assert parked.event.position == 2
    assert parked.error.startswith("NotNullViolationError (SQLSTATE 23502): null value in column")
    assert "INSERT" not in parked.error  # never the statement or its parameters


async def test_a_failure_that_is_not_the_events_parks_nothing_and_stops_the_run(engine):
    name, events = new_name(), numbered(3)

    async def expects_another_schema(conn, batch):
        await conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    projection = runner(engine, name, events, expects_another_schema)
    with pytest.raises(ProgrammingError, match="no_such_table"):
        await projection.run(stop_after=3)
    assert await projection.position() == 0
    assert await projection.parked.list(offset=0, limit=10) == ([], 0)


async def test_a_replay_applies_the_event_once_the_handler_is_fixed_and_forgets_it(engine):
    name, events = new_name(), numbered(4)
    projection = runner(engine, name, events, Handler(name, failing_on(2)))
    await projection.run(stop_after=4)
    [parked], _ = await projection.parked.list(offset=0, limit=10)

    with pytest.raises(ReplayFailed, match="cannot apply event 2"):
        await projection.parked.replay(parked_id=parked.id)  # still broken: kept
    [kept], _ = await projection.parked.list(offset=0, limit=10)
    assert (kept.id, kept.attempts, kept.error) == (parked.id, TRIES + 1, "ValueError: cannot apply event 2")
    assert await applied_positions(engine, name) == [1, 3, 4]

    fixed = runner(engine, name, events, Handler(name))
    assert await fixed.parked.replay(parked_id=parked.id) == kept
    assert await applied_positions(engine, name) == [1, 2, 3, 4]
    assert await fixed.parked.list(offset=0, limit=10) == ([], 0)
    assert parked_gauge(name) == 0
    with pytest.raises(ParkedEventNotFound):
        await fixed.parked.replay(parked_id=parked.id)


async def test_a_skip_discards_the_parked_event(engine):
    name, events = new_name(), numbered(3)
    projection = runner(engine, name, events, Handler(name, failing_on(1)))
    await projection.run(stop_after=3)
    [parked], _ = await projection.parked.list(offset=0, limit=10)
    assert parked_gauge(name) == 1
    assert await projection.parked.skip(parked_id=parked.id) == parked
    assert await projection.parked.list(offset=0, limit=10) == ([], 0)
    assert parked_gauge(name) == 0
    assert await applied_positions(engine, name) == [2, 3]
    with pytest.raises(ParkedEventNotFound):
        await projection.parked.skip(parked_id=parked.id)


async def test_another_projections_parked_events_are_not_ours(engine):
    name, events = new_name(), numbered(2)
    projection = runner(engine, name, events, Handler(name, failing_on(2)))
    await projection.run(stop_after=2)
    [parked], _ = await projection.parked.list(offset=0, limit=10)
    other = runner(engine, new_name(), events, Handler(name))
    assert await other.parked.list(offset=0, limit=10) == ([], 0)
    with pytest.raises(ParkedEventNotFound):
        await other.parked.skip(parked_id=parked.id)
    with pytest.raises(ParkedEventNotFound):
        await other.parked.replay(parked_id=parked.id)


async def test_a_rebuild_forgets_the_parked_events_and_parks_them_again_if_they_still_fail(engine):
    name, events = new_name(), numbered(3)
    projection = runner(engine, name, events, Handler(name, failing_on(2)))
    await projection.run(stop_after=3)
    [first], _ = await projection.parked.list(offset=0, limit=10)

    async def reset(conn):
        await conn.execute(applied.delete().where(applied.c.projection == name))

    await projection.rebuild(reset=reset)
    assert await projection.parked.list(offset=0, limit=10) == ([], 0)
    assert parked_gauge(name) == 0
    await projection.run(stop_after=3)
    [again], total = await projection.parked.list(offset=0, limit=10)
    assert (total, again.event, again.id != first.id) == (1, first.event, True)


async def test_an_event_parked_again_after_the_checkpoint_was_set_back_by_hand_is_parked_once(engine):
    name, events = new_name(), numbered(2)
    handler = Handler(name, failing_on(2))
    projection = runner(engine, name, events, handler)
    await projection.run(stop_after=2)
    [first], _ = await projection.parked.list(offset=0, limit=10)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE projection_checkpoints SET position = 1 WHERE name = :n"), {"n": name})
    await projection.run(stop_after=1)
    assert handler.tries_of(2) == 2 * TRIES
    [again], total = await projection.parked.list(offset=0, limit=10)
    assert (total, again.id, again.event) == (1, first.id, first.event)
    assert again.parked_at > first.parked_at
