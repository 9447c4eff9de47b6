"""The one place that builds event-store: adapters created, wired to the domain, served.

Nothing is created at import time; ``serve`` owns every resource it opens and
closes them when the servers stop (SIGTERM or SIGINT). Besides the HTTP and gRPC
APIs it runs the sequencer, the change listener and (unless disabled) the relay.
"""

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from event_store.adapters.postgres import ChangeListener, PostgresEventStorage, Sequencer, appended_hook
from event_store.adapters.relay import RabbitMQRelay
from event_store.config import SERVICE_NAME, Settings
from event_store.domain.store import EventStore
from event_store.entrypoints.grpc_server import SERVICE_NAME as GRPC_SERVICE_NAME
from event_store.entrypoints.grpc_server import EventStoreServicer
from event_store.entrypoints.http import create_http_app
from interchange_common.contracts import eventstore_pb2_grpc
from interchange_common.health import HealthCheck
from interchange_common.migrations import upgrade
from interchange_common.rpc import serve_with_http
from interchange_common.servicejwt import ServiceTokenVerifier
from interchange_common.tasks import cancel_and_wait

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    pool: asyncpg.Pool
    storage: PostgresEventStorage
    sequencer: Sequencer
    listener: ChangeListener
    relay: RabbitMQRelay
    store: EventStore
    verifier: ServiceTokenVerifier

    def health_checks(self) -> list[HealthCheck]:
        async def database() -> None:
            await self.pool.fetchval("SELECT 1")

        return [HealthCheck(name="postgres", probe=database)]

    async def close(self) -> None:
        await self.pool.close()


async def keep_session_as_is(conn: asyncpg.Connection) -> None:
    """The pool's reset when a connection comes back. asyncpg's default runs one more
    query per use (closing cursors, UNLISTEN, RESET ALL, advisory unlock) to undo
    session state that pooled connections here never set: appends take transaction
    locks only, and the sequencer and the listener have connections of their own. An
    open transaction is still rolled back (the pool does that before calling this)."""


async def build(*, settings: Settings) -> Container:
    """Everything wired, nothing running yet (asynchronous: the pool opens its connections)."""
    dsn = settings.asyncpg_dsn
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=settings.database_pool_size, reset=keep_session_as_is)

    def sequenced() -> None:
        storage.sequenced.fire()

    sequencer = Sequencer(dsn=dsn, on_sequenced=sequenced)
    storage = PostgresEventStorage(pool=pool, on_appended=appended_hook(sequencer=sequencer, pool=pool))
    relay = RabbitMQRelay(
        dsn=dsn,
        amqp_url=settings.rabbitmq_url.get_secret_value(),
        exchange=settings.events_exchange,
        storage=storage,
        batch=settings.relay_batch,
    )
    return Container(
        settings=settings,
        pool=pool,
        storage=storage,
        sequencer=sequencer,
        listener=ChangeListener(dsn=dsn, storage=storage),
        relay=relay,
        store=EventStore(storage=storage),
        verifier=ServiceTokenVerifier(service=SERVICE_NAME, secret=settings.service_jwt_secret.get_secret_value()),
    )


def migrate(*, settings: Settings) -> None:
    """Bring the schema to the newest migration (several instances may race: env.py locks)."""
    upgrade(script_location=MIGRATIONS, database_url=settings.database_url.get_secret_value())


async def serve(*, settings: Settings) -> None:
    container = await build(settings=settings)
    background = [
        asyncio.create_task(container.sequencer.run(), name="sequencer"),
        asyncio.create_task(container.listener.run(), name="change-listener"),
    ]
    if settings.relay_enabled:
        background.append(asyncio.create_task(container.relay.run(), name="relay"))
    try:
        http_app = create_http_app(
            store=container.store,
            verifier=container.verifier,
            health_checks=container.health_checks,
            max_body_bytes=settings.max_body_bytes,
        )
        await serve_with_http(
            verifier=container.verifier,
            service_name=GRPC_SERVICE_NAME,
            register=lambda server: eventstore_pb2_grpc.add_EventStoreServicer_to_server(
                EventStoreServicer(store=container.store), server
            ),
            http_app=http_app,
            host=settings.host,
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
        )
    finally:
        await cancel_and_wait(background)
        await container.close()
        _log.info("stopped")
