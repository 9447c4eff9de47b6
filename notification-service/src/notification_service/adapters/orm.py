"""notification-service's tables. Alembic migrations create them; this is how queries see them.

processed_messages   every message id handled, committed with its effect (idempotency)
recipients           user id → email and name, from user events (newest event wins)
orders               order id → user, items, total, from order.placed (later events name only the id)
notifications        what a user sees in GET /api/notifications; pushed_at NULL = still in
                     the live outbox (not yet in the user's Redis stream)
mail_outbox          mails to send; the dispatcher marks each sent once the SMTP server took it
dead_letters         messages that exhausted their retries
"""

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

processed_messages = Table(
    "processed_messages",
    metadata,
    Column("message_id", Text, primary_key=True),
    Column("routing_key", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("processed_messages_processed_at", "processed_at"),
)

recipients = Table(
    "recipients",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("email", Text, nullable=True),
    Column("name", Text, nullable=True),
    Column("deleted", Boolean, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("items", JSONB, nullable=False),
    Column("total", Numeric, nullable=False),
    Column("currency", Text, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("type", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("pushed_at", DateTime(timezone=True), nullable=True),
    # The span that made it, for the live push to continue its trace (interchange_common.tracing).
    Column("traceparent", Text, nullable=True),
    Index("notifications_user_newest", "user_id", text("created_at DESC"), text("id DESC")),
    Index("notifications_unpushed", "created_at", "id", postgresql_where=text("pushed_at IS NULL")),
)

mail_outbox = Table(
    "mail_outbox",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("id", Uuid, nullable=False, unique=True),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("to_address", Text, nullable=False),
    Column("to_name", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # Set when the mail was given up (refused for good, unsendable, or refused for now
    # too often): it is not tried again.
    Column("given_up_at", DateTime(timezone=True), nullable=True),
    # A mail refused for now (4xx) waits until then for its next attempt.
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The span that queued it, for the mail's sending to continue its trace.
    Column("traceparent", Text, nullable=True),
    Index("mail_outbox_pending", "seq", postgresql_where=text("sent_at IS NULL AND given_up_at IS NULL")),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("message_id", Text, nullable=False),
    Column("routing_key", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("correlation_id", Text, nullable=True),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("failed_at", ARRAY(DateTime(timezone=True)), nullable=False),
    Column("dead_at", DateTime(timezone=True), nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A redelivered dead message (the broker lost our ack) is the same message dead at the same instant.
    UniqueConstraint("message_id", "dead_at", name="dead_letters_message_dead_at_key"),
    Index("dead_letters_newest", text("dead_at DESC"), text("id DESC")),
)
