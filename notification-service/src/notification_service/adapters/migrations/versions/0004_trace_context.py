"""The trace context of what a message caused: each notification and queued mail
keeps the ``traceparent`` of the span that made it, so that the live push and the
mail sent later continue the trace of the order (interchange_common.tracing).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE notifications ADD COLUMN traceparent text")
    op.execute("ALTER TABLE mail_outbox ADD COLUMN traceparent text")


def downgrade() -> None:
    op.execute("ALTER TABLE mail_outbox DROP COLUMN traceparent")
    op.execute("ALTER TABLE notifications DROP COLUMN traceparent")
