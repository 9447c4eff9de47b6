"""The transactional outbox (interchange_common.outbox).

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
    op.execute(
        """
        CREATE TABLE outbox (
            seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id  uuid NOT NULL UNIQUE,
            exchange    text NOT NULL,
            routing_key text NOT NULL,
            body        jsonb NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE outbox")
