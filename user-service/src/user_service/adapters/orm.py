"""The users and revocations tables. Alembic migrations create them; this is how
queries see them."""

from sqlalchemy import ARRAY, CheckConstraint, Column, DateTime, Index, MetaData, String, Table, Text, Uuid

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(100), nullable=False),
    # Stored normalised (trimmed, lower case), so the unique index is case-insensitive.
    Column("email", String(254), nullable=False),
    Column("password_hash", Text, nullable=True),
    Column("roles", ARRAY(Text), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("status IN ('ACTIVE', 'INACTIVE', 'SUSPENDED')", name="users_status_known"),
    Index("users_email_key", "email", unique=True),
    Index("users_created_at_id", "created_at", "id"),
)

# One row per user whose tokens issued until ``revoked_at`` are refused (the latest
# mark), written with the change that revoked them. No foreign key: a deleted user's
# mark must outlive the user. Rows older than the longest token lifetime are pruned.
revocation_marks = Table(
    "revocations",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Index("revocations_revoked_at", "revoked_at"),
)
