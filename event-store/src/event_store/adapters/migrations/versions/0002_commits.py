"""Positions per commit: the sequencer numbers commits, not events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

A ``commits`` row for each transaction that appended events: ``id`` is insertion
order, ``position`` the global position of its first event (given by the sequencer
after commit), ``events`` how many it holds. An event keeps its commit and its offset
``n`` in it, and its position is the commit's plus ``n``. The events table loses
``seq``, ``position`` and their indexes (see adapters/postgres.py for why).

Events already stored become one commit each, in their insertion order, with the
position they had (or none yet: the sequencer numbers them as before).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE commits (
            id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            events   integer NOT NULL CHECK (events >= 1),
            position bigint,
            CONSTRAINT commits_position_key UNIQUE (position)
        )
        """
    )
    # The sequencer's work list: small, because commits leave it within milliseconds.
    op.execute("CREATE INDEX commits_unsequenced ON commits (id) WHERE position IS NULL")
    op.execute("INSERT INTO commits (id, events, position) OVERRIDING SYSTEM VALUE SELECT seq, 1, position FROM events")
    op.execute("SELECT setval(pg_get_serial_sequence('commits', 'id'), coalesce(max(id), 0) + 1, false) FROM commits")
    op.execute("ALTER TABLE events ADD COLUMN commit_id bigint, ADD COLUMN n integer")
    op.execute("UPDATE events SET commit_id = seq, n = 0")
    op.execute("ALTER TABLE events ALTER COLUMN commit_id SET NOT NULL, ALTER COLUMN n SET NOT NULL")
    # Dropping the columns drops their constraints and indexes too.
    op.execute("ALTER TABLE events DROP COLUMN position, DROP COLUMN seq")
    op.execute("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (commit_id, n)")


def downgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN position bigint")
    op.execute("UPDATE events e SET position = c.position + e.n FROM commits c WHERE c.id = e.commit_id")
    op.execute("ALTER TABLE events DROP CONSTRAINT events_pkey")
    # seq was insertion order: commits in their order, events in theirs within each.
    op.execute("ALTER TABLE events ADD COLUMN seq bigint")
    op.execute(
        """
        UPDATE events e SET seq = o.seq
          FROM (SELECT commit_id, n, row_number() OVER (ORDER BY commit_id, n) AS seq FROM events) AS o
         WHERE e.commit_id = o.commit_id AND e.n = o.n
        """
    )
    op.execute("ALTER TABLE events ALTER COLUMN seq SET NOT NULL")
    op.execute("ALTER TABLE events ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY")
    op.execute("SELECT setval(pg_get_serial_sequence('events', 'seq'), coalesce(max(seq), 0) + 1, false) FROM events")
    op.execute("ALTER TABLE events ADD PRIMARY KEY (seq)")
    op.execute("ALTER TABLE events ADD CONSTRAINT events_position_key UNIQUE (position)")
    op.execute("CREATE INDEX events_unsequenced ON events (seq) WHERE position IS NULL")
    op.execute("ALTER TABLE events DROP COLUMN commit_id, DROP COLUMN n")
    op.execute("DROP TABLE commits")
