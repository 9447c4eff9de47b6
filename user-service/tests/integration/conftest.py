"""A throwaway PostgreSQL database with the newest schema, for this test session."""

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.ext.asyncio import create_async_engine

from devstack.testing import delete_exchange, run_id, throwaway_database
from interchange_common.migrations import upgrade
from user_service.adapters.passwords import Argon2PasswordHasher
from user_service.adapters.repository import SqlUserRepository
from user_service.adapters.tokens import RsaAccessTokenIssuer
from user_service.bootstrap import MIGRATIONS
from user_service.domain.usecases import Users


@pytest.fixture(scope="session")
async def database_url(infra):
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_it_users") as url:
        # Alembic's env.py runs its own event loop: give it a thread of its own.
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        yield url


@pytest.fixture(scope="session")
async def engine(database_url):
    engine = create_async_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def events_exchange(infra):
    """This run's own exchange for user events; removed at the end."""
    name = f"ic-it-users-{run_id()}.events"
    yield name
    asyncio.run(delete_exchange(amqp_url=infra.rabbitmq_url, exchange=name))


@pytest.fixture(scope="session")
def repository(engine, events_exchange):
    return SqlUserRepository(engine=engine, events_exchange=events_exchange)


@pytest.fixture(scope="session")
def tokens():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return RsaAccessTokenIssuer(key=key, issuer="interchange", audience="interchange-api", ttl_seconds=900)


@pytest.fixture(scope="session")
def users(repository, tokens):
    return Users(repository=repository, hasher=Argon2PasswordHasher(), tokens=tokens)
