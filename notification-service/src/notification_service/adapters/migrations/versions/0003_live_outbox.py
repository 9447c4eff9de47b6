"""The live outbox: notifications.pushed_at is NULL until the notification is in the
user's Redis stream. Notifications made before this were pushed in process already.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE notifications ADD COLUMN pushed_at timestamptz")
    op.execute("UPDATE notifications SET pushed_at = created_at")
    op.execute("CREATE INDEX notifications_unpushed ON notifications (created_at, id) WHERE pushed_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX notifications_unpushed")
    op.execute("ALTER TABLE notifications DROP COLUMN pushed_at")
