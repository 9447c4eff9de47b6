"""The outbox keeps the trace context of the change that wrote each message, so
that its publish continues that trace (interchange_common.outbox, .tracing).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE outbox ADD COLUMN traceparent text")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox DROP COLUMN traceparent")
