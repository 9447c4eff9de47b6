"""Mails refused for now wait for their next attempt (mail_outbox.next_attempt_at);
old handled message ids are purged by time (an index on processed_at).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE mail_outbox ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now()")
    op.execute("CREATE INDEX processed_messages_processed_at ON processed_messages (processed_at)")


def downgrade() -> None:
    op.execute("DROP INDEX processed_messages_processed_at")
    op.execute("ALTER TABLE mail_outbox DROP COLUMN next_attempt_at")
