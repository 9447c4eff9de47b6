"""Alembic, the same way in every service that owns a PostgreSQL database.

A service's ``migrations/env.py`` is one call to ``run_env``; its bootstrap calls
``upgrade`` at start-up. Migrations run under an advisory lock, so several
instances starting together do not race, and on an async engine (asyncpg).
"""

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine


def alembic_config(*, script_location: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["database_url"] = database_url
    return config


def upgrade(*, script_location: Path, database_url: str) -> None:
    """Bring the schema to the newest migration. Runs its own event loop: call it
    before the service's loop starts, or from a worker thread."""
    command.upgrade(alembic_config(script_location=script_location, database_url=database_url), "head")


def run_env(*, target_metadata: MetaData | Sequence[MetaData] | None, lock_id: int) -> None:
    """The body of a service's Alembic env.py."""
    url = context.config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("set DATABASE_URL to run migrations")

    def migrate(connection: Connection) -> None:
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        engine = create_async_engine(str(url))
        try:
            async with engine.begin() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=str(url), target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(online())
