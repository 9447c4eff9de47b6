"""The revocation marks: one row per user whose tokens issued until then are refused,
written with the change that revokes them (adapters.repository), listed to the gateway
(GET /internal/revocations), which puts them back in Redis when Redis lost them.

Marks made before this migration lived only in Redis and the events: they are not
here, and stay in Redis until they expire unless Redis restarts first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE revocations (
            user_id    uuid PRIMARY KEY,
            revoked_at timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX revocations_revoked_at ON revocations (revoked_at)")


def downgrade() -> None:
    op.execute("DROP TABLE revocations")
