"""Processed messages, recipients, orders, notifications, the mail outbox and dead letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    """
    CREATE TABLE processed_messages (
        message_id   text PRIMARY KEY,
        routing_key  text NOT NULL,
        processed_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE recipients (
        user_id uuid PRIMARY KEY,
        email   text,
        name    text,
        deleted boolean NOT NULL,
        as_of   timestamptz NOT NULL
    )
    """,
    """
    CREATE TABLE orders (
        order_id uuid PRIMARY KEY,
        user_id  uuid NOT NULL,
        items    jsonb NOT NULL,
        total    numeric NOT NULL,
        currency text NOT NULL
    )
    """,
    """
    CREATE TABLE notifications (
        id         uuid PRIMARY KEY,
        user_id    uuid NOT NULL,
        type       text NOT NULL,
        title      text NOT NULL,
        body       text NOT NULL,
        data       jsonb NOT NULL,
        event_id   uuid NOT NULL UNIQUE,
        created_at timestamptz NOT NULL
    )
    """,
    "CREATE INDEX notifications_user_newest ON notifications (user_id, created_at DESC, id DESC)",
    """
    CREATE TABLE mail_outbox (
        seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id          uuid NOT NULL UNIQUE,
        event_id    uuid NOT NULL UNIQUE,
        to_address  text NOT NULL,
        to_name     text NOT NULL,
        subject     text NOT NULL,
        body        text NOT NULL,
        created_at  timestamptz NOT NULL,
        attempts    integer NOT NULL DEFAULT 0,
        last_error  text,
        sent_at     timestamptz,
        given_up_at timestamptz
    )
    """,
    "CREATE INDEX mail_outbox_pending ON mail_outbox (seq) WHERE sent_at IS NULL AND given_up_at IS NULL",
    """
    CREATE TABLE dead_letters (
        id             uuid PRIMARY KEY,
        message_id     text NOT NULL,
        routing_key    text NOT NULL,
        body           bytea NOT NULL,
        headers        jsonb NOT NULL,
        correlation_id text,
        error          text NOT NULL,
        attempts       integer NOT NULL,
        failed_at      timestamptz[] NOT NULL,
        dead_at        timestamptz NOT NULL,
        stored_at      timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT dead_letters_message_dead_at_key UNIQUE (message_id, dead_at)
    )
    """,
    "CREATE INDEX dead_letters_newest ON dead_letters (dead_at DESC, id DESC)",
)


def upgrade() -> None:
    for statement in _TABLES:
        op.execute(statement)


def downgrade() -> None:
    for table in ("dead_letters", "mail_outbox", "notifications", "orders", "recipients", "processed_messages"):
        op.execute(f"DROP TABLE {table}")
