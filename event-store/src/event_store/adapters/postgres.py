"""EventStorage on PostgreSQL, and the sequencer that gives events their global order.

Why a sequencer. Positions taken from a sequence at insert time are not in commit
order: a transaction can take position 7, commit after the one that took 8, and a
reader that already moved past 8 never sees 7. Locking the table for every append
(pyeventsourcing's way) fixes that but holds the lock through each commit's WAL
flush, so appends run one at a time: measured here, 2,004 appends/s against
pgbench's 8,206 single-row inserts/s at 8 clients.

So appends commit concurrently (PostgreSQL flushes their commits together) with no
position, and one sequencer at a time (a session advisory lock elects it among all
event-store instances) numbers what committed, in insert order, in one short
transaction per pass. Positions therefore become visible only in increasing order:
a reader of "all" never skips one. Within a stream, version n is committed before
version n+1 can be inserted, so insert order keeps stream order.

What the sequencer numbers is a commit, not an event. Each transaction that appends
writes one ``commits`` row (insert order, how many events) and its events, each with
its offset ``n`` in the commit; the sequencer gives the commit the position of its
first event, and an event's position is that plus ``n``. Numbering 100 events is
then one narrow row updated, where numbering each event rewrote its row and all its
index entries (twice the write work of the insert itself: the sequencer fell behind
100-event appends at half their rate).

Appends go out in groups (adapters/group_commit.py): those that arrive while others
are being written are decided and written together, in one statement and one commit.

    group          1 round trip when this instance wrote each of its streams last (it
                   remembers their versions: one INSERT of the commit and every
                   accepted member's events, which checks those versions and writes
                   nothing if one moved); else 2: read the versions, then that INSERT.
                   Event ids are taken to be new: if the unique key says otherwise,
                   nothing is written and each member is appended alone
    alone          the careful path: the stream's lock, current version and the ids
                   already recorded, decide, insert
    sequencer      woken in-process after local appends, by NOTIFY events_appended
                   from other instances; one statement per pass numbers commits and
                   notifies events_sequenced; after a full pass, a second tells what
                   it left: the lag gauges (the events of the next batch of commits,
                   counted; past those, reckoned from the commit ids at the same
                   average size)
    ChangeListener LISTENs to events_sequenced and fires the storage's signals, so
                   subscribers on every instance wake without polling
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from prometheus_client import Gauge

from event_store.adapters.errors import EventStorageUnavailable
from event_store.adapters.group_commit import GroupCommit, Member
from event_store.domain.errors import SnapshotNotFound, WrongExpectedVersion
from event_store.domain.model import (
    MAX_BATCH,
    Decision,
    Direction,
    Existing,
    ExpectedVersion,
    NewEvent,
    Page,
    Snapshot,
    decide_append,
)
from interchange_common import tracing
from interchange_common.database import is_unavailable
from interchange_common.events import RecordedEvent
from interchange_common.signal import Signal
from interchange_common.tasks import run_forever, wait_alive

_log = logging.getLogger(__name__)

APPENDED_CHANNEL = "events_appended"
SEQUENCED_CHANNEL = "events_sequenced"
SEQUENCER_LOCK = 0x65766E74_73657100  # "evnt" "seq": one sequencer per database
# Groups written at once (see adapters/group_commit.py): two of any size, six more of
# 100 events or more.
GROUP_WRITERS = 2
LARGE_GROUP_WRITERS = 6
LARGE_GROUP_EVENTS = 100
MAX_GROUP_EVENTS = MAX_BATCH  # a group of many large appends would be one long statement
_KNOWN_STREAMS = 10_000  # streams whose version an instance remembers after writing them
_RETRIES = 5  # under the stream's lock, only group writers can still get in first
_COALESCE_SECONDS = 0.002
# A connection the server ended while asyncpg still awaited the end of an error has
# not noticed yet; the next statement on it fails in the client, before anything is
# sent, with InternalClientError ("another operation is in progress").
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError)
SEQUENCER_LEADER = Gauge("eventstore_sequencer_leader", "1 on the instance whose sequencer assigns positions now")
SEQUENCER_LAG_EVENTS = Gauge(
    "eventstore_sequencer_lag_events", "Committed events not yet given a global position (after the leader's last pass)"
)
SEQUENCER_LAG_SECONDS = Gauge(
    "eventstore_sequencer_lag_seconds", "Age of the oldest committed event without a global position (0: none)"
)

_STREAM_VERSIONS = """
SELECT s.stream_id, (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = s.stream_id) AS version
  FROM unnest($1::text[]) AS s(stream_id)
"""
_CURRENT_AND_EXISTING = """
SELECT NULL::uuid AS id, NULL::text AS stream_id, coalesce(max(version), 0) AS version
  FROM events WHERE stream_id = $1
UNION ALL
SELECT id, stream_id, version FROM events WHERE id = ANY($2::uuid[])
"""
_RECORDED = "SELECT id, stream_id, version FROM events WHERE id = ANY($1::uuid[])"
# One commit and its events, from one JSON array of rows: one parameter to encode
# (orjson, in one call) and to parse, where arrays of ids, texts and JSON documents
# cost a conversion per element on both sides.
_INSERT = """
WITH c AS (INSERT INTO commits (events) VALUES ($1) RETURNING id)
INSERT INTO events (commit_id, n, id, stream_id, version, type, data, metadata)
SELECT c.id, e.n - 1, e.id, e.stream_id, e.version, e.type, e.data, e.metadata
  FROM c, ROWS FROM (
      jsonb_to_recordset($2::jsonb) AS (id uuid, stream_id text, version bigint, type text, data jsonb, metadata jsonb)
  ) WITH ORDINALITY AS e(id, stream_id, version, type, data, metadata, n)
"""
# The same, only if every stream is at the version given.
_INSERT_AT = """
WITH c AS (
    INSERT INTO commits (events)
    SELECT $1 WHERE NOT EXISTS (
        SELECT FROM jsonb_to_recordset($3::jsonb) AS s(stream_id text, version bigint)
         WHERE s.version <> (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = s.stream_id)
    )
    RETURNING id
)
INSERT INTO events (commit_id, n, id, stream_id, version, type, data, metadata)
SELECT c.id, e.n - 1, e.id, e.stream_id, e.version, e.type, e.data, e.metadata
  FROM c, ROWS FROM (
      jsonb_to_recordset($2::jsonb) AS (id uuid, stream_id text, version bigint, type text, data jsonb, metadata jsonb)
  ) WITH ORDINALITY AS e(id, stream_id, version, type, data, metadata, n)
"""
_COLUMNS = """
SELECT e.id, e.stream_id, e.type, e.data::text AS data, e.metadata::text AS metadata, e.version,
       c.position + e.n AS position, e.recorded_at
  FROM events e JOIN commits c ON c.id = e.commit_id
"""
_READ_FORWARD = _COLUMNS + " WHERE e.stream_id = $1 AND e.version >= $2 ORDER BY e.version LIMIT $3"
_READ_BACKWARD = _COLUMNS + " WHERE e.stream_id = $1 AND ($2 = 0 OR e.version <= $2) ORDER BY e.version DESC LIMIT $3"
# From the commit that holds position $1: the last one that starts at or before it.
_READ_ALL = """
SELECT e.id, e.stream_id, e.type, e.data::text AS data, e.metadata::text AS metadata, e.version,
       c.position + e.n AS position, e.recorded_at
  FROM commits c JOIN events e ON e.commit_id = c.id
 WHERE c.position >= (SELECT coalesce(max(position), 0) FROM commits WHERE position <= $1)
   AND c.position + e.n >= $1
 ORDER BY c.position, e.n
 LIMIT $2
"""
# One pass, one statement (so one round trip and one commit): committed commits
# without a position get the next ones, in insert order, each as many as it holds
# events; the NOTIFY, sent only when some were numbered, carries the last position.
_SEQUENCE = """
WITH pending AS (
    SELECT id, sum(events) OVER (ORDER BY id) - events AS before
      FROM (SELECT id, events FROM commits WHERE position IS NULL ORDER BY id LIMIT $1) AS p
), top AS (
    SELECT coalesce(
        (SELECT position + events FROM commits WHERE position IS NOT NULL ORDER BY position DESC LIMIT 1), 1
    ) AS next
), numbered AS (
    UPDATE commits SET position = top.next + pending.before
      FROM pending, top
     WHERE commits.id = pending.id
    RETURNING commits.position + commits.events - 1 AS last
)
SELECT count(*) AS commits, pg_notify($2, max(last)::text) FROM numbered HAVING count(*) > 0
"""
# What a full pass left (a pass that was not full left nothing it could see): the
# next batch of commits without a position, counted; the commits past those; the
# age of the oldest event left. Asked only after a full pass, off the usual path.
_LEFT = """
SELECT r.commits AS rest_commits, r.events AS rest_events,
       coalesce((SELECT max(id) FROM commits) - r.last, 0) AS beyond,
       (SELECT extract(epoch FROM now() - e.recorded_at)::float8
          FROM events e WHERE e.commit_id = r.first AND e.n = 0) AS oldest_seconds
  FROM (SELECT count(*) AS commits, coalesce(sum(events), 0) AS events, min(id) AS first, max(id) AS last
          FROM (SELECT id, events FROM commits WHERE position IS NULL ORDER BY id LIMIT $1) AS rest) AS r
"""


@dataclass(frozen=True, slots=True)
class _Append:
    stream_id: str
    expected: ExpectedVersion
    events: list[NewEvent]


def _rows(append: _Append, decision: Decision) -> list[dict[str, Any]]:
    return [
        {
            "id": event.id,
            "stream_id": append.stream_id,
            "version": decision.first_version + offset,
            "type": event.type,
            "data": event.data,
            "metadata": event.metadata,
        }
        for offset, event in enumerate(append.events)
    ]


def _decide_group(
    appends: list[_Append], *, versions: dict[str, int], recorded: dict[uuid.UUID, Existing]
) -> tuple[list[Decision | Exception], list[dict[str, Any]]]:
    """Each member decided in queue order against its stream's version as the members
    before it leave it, and against the ``recorded`` events and those of the members
    accepted before it; with the rows of the accepted ones."""
    versions = dict(versions)
    accepted = dict(recorded)
    outcomes: list[Decision | Exception] = []
    rows: list[dict[str, Any]] = []
    for append in appends:
        try:
            decision = decide_append(
                stream_id=append.stream_id,
                expected=append.expected,
                current=versions[append.stream_id],
                events=append.events,
                existing=[accepted[event.id] for event in append.events if event.id in accepted],
            )
        except WrongExpectedVersion as e:
            outcomes.append(e)
            continue
        outcomes.append(decision)
        if not decision.already_recorded:
            versions[append.stream_id] = decision.last_version
            for event, row in zip(append.events, _rows(append, decision), strict=True):
                rows.append(row)
                accepted[event.id] = Existing(id=event.id, stream_id=append.stream_id, version=row["version"])
    return outcomes, rows


async def _insert(conn: asyncpg.Connection, rows: list[dict[str, Any]], *, at: dict[str, int] | None) -> bool:
    """Write a commit of ``rows``; with ``at``, only if every stream is at that version
    (whether it was written)."""
    if at is None:
        await conn.execute(_INSERT, len(rows), orjson.dumps(rows).decode())
        return True
    streams = [{"stream_id": stream, "version": version} for stream, version in at.items()]
    status = await conn.execute(_INSERT_AT, len(rows), orjson.dumps(rows).decode(), orjson.dumps(streams).decode())
    return bool(status != "INSERT 0 0")


def _refused(error: Exception) -> bool:
    """PostgreSQL answered the group's statement with an error (nothing was written and
    the server is there), or its rows could not be encoded: one member's fault, maybe."""
    if isinstance(error, orjson.JSONEncodeError):
        return True
    return isinstance(error, asyncpg.PostgresError) and not is_unavailable(error)


def _unavailable(error: Exception) -> EventStorageUnavailable:
    failure = EventStorageUnavailable("could not append")
    failure.__cause__ = error
    return failure


def _recorded(row: Any) -> RecordedEvent:
    return RecordedEvent(
        id=row["id"],
        stream_id=row["stream_id"],
        type=row["type"],
        data=orjson.loads(row["data"]),
        metadata=orjson.loads(row["metadata"]),
        version=row["version"],
        position=row["position"],
        recorded_at=row["recorded_at"],
    )


class PostgresEventStorage:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        on_appended: Callable[[], Awaitable[None]],
        group_writers: int = GROUP_WRITERS,
        large_group_writers: int = LARGE_GROUP_WRITERS,
        max_group_events: int = MAX_GROUP_EVENTS,
    ) -> None:
        self._pool = pool
        self._on_appended = on_appended
        self._appended = Signal()
        self._sequenced = Signal()
        self._versions: dict[str, int] = {}
        self._groups: GroupCommit[_Append, Decision] = GroupCommit(
            write=self._write_group,
            key=lambda append: append.stream_id,
            size=lambda append: len(append.events),
            max_size=max_group_events,
            writers=group_writers,
            large_writers=large_group_writers,
            large=LARGE_GROUP_EVENTS,
        )

    @property
    def appended(self) -> Signal:
        return self._appended

    @property
    def sequenced(self) -> Signal:
        return self._sequenced

    @property
    def appends_waiting(self) -> int:
        """Appends queued for the next group while every group writer is busy."""
        return self._groups.waiting

    async def append(self, *, stream_id: str, expected: ExpectedVersion, events: list[NewEvent]) -> Decision:
        return await self._groups.submit(_Append(stream_id=stream_id, expected=expected, events=events))

    async def _write_group(self, group: list[Member[_Append, Decision]]) -> None:
        """Write a group and answer each member: its decision, its WrongExpectedVersion,
        or EventStorageUnavailable for all when the database could not be reached."""
        appends = [member.item for member in group]
        # One span for the group, linked to each append's own (a group serves many
        # requests: it belongs to none of their traces, each of them reaches it).
        first_events = (event for append in appends for event in append.events[:1])
        with tracing.span(
            "append group",
            root=True,
            links=tracing.links_to(event.metadata.get(tracing.TRACEPARENT) for event in first_events),
            attributes={"interchange.appends": len(appends)},
        ):
            await self._write_group_traced(group, appends)

    async def _write_group_traced(self, group: list[Member[_Append, Decision]], appends: list[_Append]) -> None:
        outcomes: list[Decision | Exception]
        try:
            outcomes, written = await self._append_together(appends)
        except (*_DB_ERRORS, orjson.JSONEncodeError) as e:
            if not _refused(e):
                for member in group:
                    member.fail(_unavailable(e))
                return
            # Nothing was written: a repeated event id, a version another instance took
            # meanwhile, or one member's bad data. Each on its own gets its own answer.
            outcomes, written = [], False
            for append in appends:
                try:
                    decision = await self._append_alone(append)
                except Exception as e:  # the member's answer, whatever it is
                    outcomes.append(e)
                else:
                    outcomes.append(decision)
                    written = written or not decision.already_recorded
        if written:
            await self._appended_now()
        for member, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Exception):
                member.fail(outcome)
            else:
                member.succeed(outcome)

    async def _append_together(self, appends: list[_Append]) -> tuple[list[Decision | Exception], bool]:
        """The group decided and written in one statement (when any member is accepted):
        whether anything was written. With every stream's version known from this
        instance's last write, one round trip that checks them; else two: read, write."""
        streams = list(dict.fromkeys(append.stream_id for append in appends))
        async with self._pool.acquire() as conn:
            known = {stream: self._versions[stream] for stream in streams if stream in self._versions}
            if len(known) == len(streams):
                outcomes, rows = _decide_group(appends, versions=known, recorded={})
                accepted = rows and not any(isinstance(outcome, Exception) for outcome in outcomes)
                if accepted and await _insert(conn, rows, at=known):
                    self._remember(rows)
                    return outcomes, True
            versions = {row["stream_id"]: row["version"] for row in await conn.fetch(_STREAM_VERSIONS, streams)}
            outcomes, rows = _decide_group(appends, versions=versions, recorded={})
            refused = [
                event.id
                for append, outcome in zip(appends, outcomes, strict=True)
                if isinstance(outcome, WrongExpectedVersion)
                for event in append.events
            ]
            if refused:
                # A writer that repeats an append it is not sure went through expects a
                # version the stream has passed: its ids, if recorded, make it a replay.
                recorded = {row["id"]: Existing(**row) for row in await conn.fetch(_RECORDED, refused)}
                if recorded:
                    outcomes, rows = _decide_group(appends, versions=versions, recorded=recorded)
            if rows:
                await _insert(conn, rows, at=None)
                self._remember(rows)
        return outcomes, bool(rows)

    def _remember(self, rows: list[dict[str, Any]]) -> None:
        """The streams just written are at their last rows' versions (until someone else
        writes them: a guess that the next group's statement checks)."""
        for row in rows:
            self._versions.pop(row["stream_id"], None)  # re-inserted last: the newest
            self._versions[row["stream_id"]] = row["version"]
        while len(self._versions) > _KNOWN_STREAMS:
            del self._versions[next(iter(self._versions))]

    async def _append_alone(self, append: _Append) -> Decision:
        stream_id, events = append.stream_id, append.events
        ids = [event.id for event in events]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # Writers of one stream queue up here instead of racing each other; a
                # group (of this instance or another) may still get in first, and then
                # we simply decide again.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", stream_id)
                for _ in range(_RETRIES):
                    rows = await conn.fetch(_CURRENT_AND_EXISTING, stream_id, ids)
                    current = rows[0]["version"]
                    existing = [Existing(id=r["id"], stream_id=r["stream_id"], version=r["version"]) for r in rows[1:]]
                    decision = decide_append(
                        stream_id=stream_id, expected=append.expected, current=current, events=events, existing=existing
                    )
                    if decision.already_recorded:
                        return decision
                    try:
                        async with conn.transaction():  # a savepoint: a lost race leaves the transaction usable
                            await _insert(conn, _rows(append, decision), at=None)
                    except asyncpg.UniqueViolationError:
                        continue
                    return decision
                raise WrongExpectedVersion(stream_id=stream_id, expected=str(append.expected), actual=current)
        except _DB_ERRORS as e:
            raise EventStorageUnavailable("could not append") from e

    async def _appended_now(self) -> None:
        self._appended.fire()
        try:
            await self._on_appended()
        except _DB_ERRORS as e:
            # The events are committed: the writers must hear so. Whoever leads the
            # sequencer numbers them at its next pass (at the latest when it reconnects).
            _log.warning("could not wake the sequencer", extra={"error": type(e).__name__})

    async def stream_version(self, *, stream_id: str) -> int:
        try:
            version = await self._pool.fetchval(
                "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1", stream_id
            )
        except _DB_ERRORS as e:
            raise EventStorageUnavailable("could not read the stream") from e
        return int(version)

    async def read_stream(self, *, stream_id: str, start: int, direction: Direction, limit: int) -> Page:
        try:
            if direction is Direction.FORWARD:
                rows = await self._pool.fetch(_READ_FORWARD, stream_id, max(start, 1), limit)
            else:
                rows = await self._pool.fetch(_READ_BACKWARD, stream_id, start, limit)
        except _DB_ERRORS as e:
            raise EventStorageUnavailable("could not read the stream") from e
        events = [_recorded(row) for row in rows]
        if direction is Direction.FORWARD:
            return Page(events=events, next=max(start, 1) + len(events), end=len(events) < limit)
        next_version = events[-1].version - 1 if events else 0
        return Page(events=events, next=next_version, end=len(events) < limit or next_version < 1)

    async def read_all(self, *, start: int, limit: int) -> Page:
        try:
            rows = await self._pool.fetch(_READ_ALL, max(start, 1), limit)
        except _DB_ERRORS as e:
            raise EventStorageUnavailable("could not read events") from e
        events = [_recorded(row) for row in rows]
        return Page(events=events, next=max(start, 1) + len(events), end=len(events) < limit)

    async def save_snapshot(self, *, stream_id: str, version: int, data: dict[str, Any]) -> Snapshot:
        try:
            row = await self._pool.fetchrow(
                """
                INSERT INTO snapshots AS s (stream_id, version, data) VALUES ($1, $2, $3::jsonb)
                ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, data = excluded.data,
                       saved_at = excluded.saved_at
                 WHERE s.version < excluded.version
                RETURNING stream_id, version, data::text AS data, saved_at
                """,
                stream_id,
                version,
                orjson.dumps(data).decode(),
            )
        except _DB_ERRORS as e:
            raise EventStorageUnavailable("could not save the snapshot") from e
        if row is None:  # a newer snapshot is already kept
            return await self.load_snapshot(stream_id=stream_id)
        return Snapshot(row["stream_id"], row["version"], orjson.loads(row["data"]), row["saved_at"])

    async def load_snapshot(self, *, stream_id: str) -> Snapshot:
        try:
            row = await self._pool.fetchrow(
                "SELECT stream_id, version, data::text AS data, saved_at FROM snapshots WHERE stream_id = $1", stream_id
            )
        except _DB_ERRORS as e:
            raise EventStorageUnavailable("could not load the snapshot") from e
        if row is None:
            raise SnapshotNotFound(stream_id)
        return Snapshot(row["stream_id"], row["version"], orjson.loads(row["data"]), row["saved_at"])


class Sequencer:
    """Assigns global positions. Every instance runs one; only the lock holder works.
    A pass numbers up to ``batch`` commits."""

    def __init__(self, *, dsn: str, batch: int = 1000, on_sequenced: Callable[[], None]) -> None:
        self._dsn = dsn
        self._batch = batch
        self._on_sequenced = on_sequenced
        self._wake = asyncio.Event()
        self.is_leader = False

    def kick(self) -> None:
        self._wake.set()

    def _lost_leadership(self) -> None:
        # The session (and with it the lock) is gone: appends must tell the new leader,
        # and the loop must notice, reconnect and queue up again.
        self.is_leader = False
        SEQUENCER_LEADER.set(0)
        self.kick()

    async def run(self) -> None:
        await run_forever(name="sequencer", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            conn.add_termination_listener(lambda _: self._lost_leadership())
            await conn.add_listener(APPENDED_CHANNEL, lambda *_: self.kick())
            # Appends made here while this instance wrongly believed it led only woke
            # this sequencer: tell whoever leads now, before waiting in line.
            await conn.execute("SELECT pg_notify($1, '')", APPENDED_CHANNEL)
            # Blocks until this instance is the one sequencer: no polling while waiting.
            await conn.execute("SELECT pg_advisory_lock($1)", SEQUENCER_LOCK)
            self.is_leader = True
            SEQUENCER_LEADER.set(1)
            connected()
            _log.info("sequencer leads")
            self.kick()  # events appended while nobody led
            while True:
                await wait_alive(conn, self._wake)
                # Under load, appends arrive faster than passes commit: a moment's
                # wait lets one pass number many of them (one commit, one NOTIFY).
                await asyncio.sleep(_COALESCE_SECONDS)
                self._wake.clear()
                while await self._pass(conn) == self._batch:
                    pass
        finally:
            self.is_leader = False
            SEQUENCER_LEADER.set(0)
            SEQUENCER_LAG_EVENTS.set(0)  # whoever leads now tells
            SEQUENCER_LAG_SECONDS.set(0)
            conn.terminate()  # never waits on a connection that may be broken

    async def _pass(self, conn: asyncpg.Connection) -> int:
        commits = int(await conn.fetchval(_SEQUENCE, self._batch, SEQUENCED_CHANNEL) or 0)
        if commits == self._batch:
            await self._measure_left(conn)
        else:
            SEQUENCER_LAG_EVENTS.set(0)
            SEQUENCER_LAG_SECONDS.set(0)
        if commits:
            self._on_sequenced()
        return commits

    async def _measure_left(self, conn: asyncpg.Connection) -> None:
        left_behind = await conn.fetchrow(_LEFT, self._batch)
        left = int(left_behind["rest_events"])
        if left_behind["rest_commits"] == self._batch:  # more past these: as large, on average
            left += round(left_behind["beyond"] * left / self._batch)
        SEQUENCER_LAG_EVENTS.set(left)
        SEQUENCER_LAG_SECONDS.set(max(0.0, left_behind["oldest_seconds"] or 0.0))


class ChangeListener:
    """LISTENs for sequencing done by any instance and fires the storage's signals."""

    def __init__(self, *, dsn: str, storage: PostgresEventStorage) -> None:
        self._dsn = dsn
        self._storage = storage

    def _fire(self, *_: object) -> None:
        self._storage.sequenced.fire()
        self._storage.appended.fire()

    async def run(self) -> None:
        await run_forever(name="change listener", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(SEQUENCED_CHANNEL, self._fire)
            connected()
            self._fire()  # whatever happened while we were not listening
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _: closed.set())
            while not closed.is_set():
                await wait_alive(conn, closed)
        finally:
            conn.terminate()


def appended_hook(*, sequencer: Sequencer, pool: asyncpg.Pool) -> Callable[[], Awaitable[None]]:
    """After an append: wake the local sequencer, or tell the leading one elsewhere."""

    async def appended() -> None:
        if sequencer.is_leader:
            sequencer.kick()
        else:
            await pool.execute("SELECT pg_notify($1, '')", APPENDED_CHANNEL)

    return appended
