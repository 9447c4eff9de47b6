"""The migrations create exactly the schema the code describes (adapters/orm.py)."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from notification_service.adapters.orm import metadata

pytestmark = pytest.mark.integration


async def test_the_migrated_schema_matches_the_tables_in_code(database_url):
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    finally:
        await engine.dispose()
    assert differences == []
