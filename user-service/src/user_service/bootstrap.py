"""The one place that builds user-service: adapters created, wired to the domain, served.

Nothing is created at import time; ``serve`` owns every resource it opens and
closes them when the servers stop (SIGTERM or SIGINT).
"""

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from interchange_common.contracts import user_pb2_grpc
from interchange_common.database import create_engine
from interchange_common.health import HealthCheck
from interchange_common.migrations import upgrade
from interchange_common.outbox import OutboxRelay
from interchange_common.rpc import serve_with_http
from interchange_common.servicejwt import ServiceTokenVerifier
from interchange_common.tasks import cancel_and_wait
from user_service.adapters.passwords import Argon2PasswordHasher
from user_service.adapters.repository import SqlUserRepository
from user_service.adapters.tokens import RsaAccessTokenIssuer, load_private_key, load_public_key
from user_service.config import SERVICE_NAME, Settings
from user_service.domain.usecases import Users
from user_service.entrypoints.grpc_server import SERVICE_NAME as GRPC_SERVICE_NAME
from user_service.entrypoints.grpc_server import UserServicer
from user_service.entrypoints.http import create_http_app

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
OUTBOX_RELAY_LOCK = 0x75736572_6F757400  # "user" "out": one outbox relay per database


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    engine: AsyncEngine
    users: Users
    tokens: RsaAccessTokenIssuer
    verifier: ServiceTokenVerifier

    def health_checks(self) -> list[HealthCheck]:
        async def database() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        return [HealthCheck(name="postgres", probe=database)]


def build(*, settings: Settings) -> Container:
    engine = create_engine(url=settings.database_url.get_secret_value(), pool_size=settings.database_pool_size)
    tokens = RsaAccessTokenIssuer(
        key=load_private_key(path=settings.jwt_private_key_file),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.access_token_ttl_seconds,
        verify_only=[load_public_key(path=path) for path in settings.jwt_verify_only_key_files],
    )
    repository = SqlUserRepository(engine=engine, events_exchange=settings.events_exchange)
    users = Users(repository=repository, hasher=Argon2PasswordHasher(), tokens=tokens)
    verifier = ServiceTokenVerifier(service=SERVICE_NAME, secret=settings.service_jwt_secret.get_secret_value())
    return Container(settings=settings, engine=engine, users=users, tokens=tokens, verifier=verifier)


def migrate(*, settings: Settings) -> None:
    """Bring the schema to the newest migration (several instances may race: env.py locks)."""
    upgrade(script_location=MIGRATIONS, database_url=settings.database_url.get_secret_value())


async def serve(*, settings: Settings) -> None:
    container = build(settings=settings)
    background = []
    if settings.outbox_relay_enabled:
        relay = OutboxRelay(
            name=SERVICE_NAME,
            dsn=settings.database_url.get_secret_value(),
            amqp_url=settings.rabbitmq_url.get_secret_value(),
            lock_id=OUTBOX_RELAY_LOCK,
        )
        background.append(asyncio.create_task(relay.run(), name="outbox-relay"))
    try:
        await container.users.ensure_admin_account(
            email=settings.admin_email, password=settings.admin_password.get_secret_value()
        )
        http_app = create_http_app(
            users=container.users,
            verifier=container.verifier,
            jwks=container.tokens.jwks,
            health_checks=container.health_checks,
            max_body_bytes=settings.max_body_bytes,
        )
        await serve_with_http(
            verifier=container.verifier,
            service_name=GRPC_SERVICE_NAME,
            register=lambda server: user_pb2_grpc.add_UserServiceServicer_to_server(
                UserServicer(users=container.users), server
            ),
            http_app=http_app,
            host=settings.host,
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
        )
    finally:
        await cancel_and_wait(background)
        await container.engine.dispose()
        _log.info("stopped")
