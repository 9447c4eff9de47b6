"""Events, snapshots and checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

``seq`` is insertion order, taken at insert (not commit) time; ``position`` is the
global order, given by the sequencer after commit (see adapters/postgres.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE events (
            seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id          uuid NOT NULL,
            stream_id   text NOT NULL,
            version     bigint NOT NULL CHECK (version >= 1),
            type        text NOT NULL,
            data        jsonb NOT NULL,
            metadata    jsonb NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            position    bigint,
            CONSTRAINT events_id_key UNIQUE (id),
            CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
            CONSTRAINT events_position_key UNIQUE (position)
        )
        """
    )
    # The sequencer's work list: small, because events leave it within milliseconds.
    op.execute("CREATE INDEX events_unsequenced ON events (seq) WHERE position IS NULL")
    op.execute(
        """
        CREATE TABLE snapshots (
            stream_id text PRIMARY KEY,
            version   bigint NOT NULL CHECK (version >= 1),
            data      jsonb NOT NULL,
            saved_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE TABLE checkpoints (name text PRIMARY KEY, position bigint NOT NULL)")


def downgrade() -> None:
    op.execute("DROP TABLE checkpoints")
    op.execute("DROP TABLE snapshots")
    op.execute("DROP TABLE events")
