"""How far behind a ProjectionRunner is, as it tells after each batch: the events
read ahead and waiting, and the age of the last event gone over; nothing once it
has caught up. The runner's checkpoints are in a real PostgreSQL database; its
events come from a source that has a backlog of old events waiting at once."""

import asyncio
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import eventually, throwaway_database
from interchange_common.events import RecordedEvent
from interchange_common.projections import ProjectionRunner
from interchange_common.projections import metadata as projection_metadata
from interchange_common.tasks import background

pytestmark = pytest.mark.integration
AGE = timedelta(seconds=60)


@pytest.fixture(scope="module")
async def engine(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_projlag") as url:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(projection_metadata.create_all)
        yield engine
        await engine.dispose()


class Backlog:
    """Events 1 … ``count``, recorded a minute ago, all there at once; then nothing
    more comes (a subscription that has caught up and stays open)."""

    def __init__(self, *, count: int) -> None:
        self._count = count
        self._recorded_at = datetime.now(UTC) - AGE

    async def subscribe(self, *, start: int) -> AsyncGenerator[RecordedEvent, None]:
        for position in range(start, self._count + 1):
            yield RecordedEvent(
                id=uuid.uuid4(),
                stream_id="s",
                type="thing.happened",
                data={},
                metadata={},
                version=position,
                position=position,
                recorded_at=self._recorded_at,
            )
        await asyncio.Event().wait()


def lag(name: str) -> tuple[float | None, float | None]:
    return (
        REGISTRY.get_sample_value("projection_lag_events", {"projection": name}),
        REGISTRY.get_sample_value("projection_lag_seconds", {"projection": name}),
    )


async def test_the_lag_is_what_waits_and_how_old_until_the_runner_catches_up(engine):
    name = f"lag-{uuid.uuid4().hex[:6]}"
    seen_by_each_batch: list[tuple[float | None, float | None]] = []

    async def note(conn, events):
        seen_by_each_batch.append(lag(name))  # as the batch before left it

    runner = ProjectionRunner(name=name, engine=engine, source=Backlog(count=10), handler=note, max_batch=3)
    assert lag(name) == (0, 0)  # on /metrics from the start
    async with background(runner.run()):

        async def caught_up() -> bool:
            return runner.handled_up_to == 10 and lag(name) == (0, 0)

        await eventually(caught_up, timeout=10, what=f"the runner to catch up, last {lag(name)}")
    behind = seen_by_each_batch[1:]  # three at a time, read ahead three at most: 3, 3, 1 wait
    assert len(behind) >= 3
    assert all(events is not None and 1 <= events <= 3 for events, _ in behind)
    assert all(
        seconds is not None and AGE.total_seconds() <= seconds < AGE.total_seconds() + 10 for _, seconds in behind
    )
