"""The one place that builds event-store: pool, storage, sequencer, listener, relay,
HTTP and gRPC servers. Nothing is created at import time; ``serve`` closes all it opens."""

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


def migrate(*, settings: Settings) -> None:
    upgrade(script_location=MIGRATIONS, database_url=settings.database_url.get_secret_value())


@dataclass
class Components:
    pool: asyncpg.Pool
    storage: PostgresEventStorage
    sequencer: Sequencer
    listener: ChangeListener


async def build_storage(*, dsn: str, pool_size: int) -> Components:
    """PostgreSQL storage with its sequencer and change listener (not yet running)."""
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=pool_size)

    def sequenced() -> None:
        storage.sequenced.fire()

    sequencer = Sequencer(dsn=dsn, on_sequenced=sequenced)
    storage = PostgresEventStorage(pool=pool, on_appended=appended_hook(sequencer=sequencer, pool=pool))
    return Components(
        pool=pool, storage=storage, sequencer=sequencer, listener=ChangeListener(dsn=dsn, storage=storage)
    )


async def serve(*, settings: Settings) -> None:
    components = await build_storage(dsn=settings.asyncpg_dsn, pool_size=settings.database_pool_size)
    store = EventStore(storage=components.storage)
    verifier = ServiceTokenVerifier(service=SERVICE_NAME, secret=settings.service_jwt_secret.get_secret_value())
    background = [
        asyncio.create_task(components.sequencer.run(), name="sequencer"),
        asyncio.create_task(components.listener.run(), name="change-listener"),
    ]
    if settings.relay_enabled:
        relay = RabbitMQRelay(
            dsn=settings.asyncpg_dsn,
            amqp_url=settings.rabbitmq_url.get_secret_value(),
            exchange=settings.events_exchange,
            storage=components.storage,
            batch=settings.relay_batch,
        )
        background.append(asyncio.create_task(relay.run(), name="relay"))

    async def database() -> None:
        await components.pool.fetchval("SELECT 1")

    try:
        http_app = create_http_app(
            store=store,
            verifier=verifier,
            health_checks=lambda: [HealthCheck(name="postgres", probe=database)],
            max_body_bytes=settings.max_body_bytes,
        )
        await serve_with_http(
            verifier=verifier,
            service_name=GRPC_SERVICE_NAME,
            register=lambda server: eventstore_pb2_grpc.add_EventStoreServicer_to_server(
                EventStoreServicer(store=store), server
            ),
            http_app=http_app,
            host=settings.host,
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
        )
    finally:
        await cancel_and_wait(background)
        await components.pool.close()
        _log.info("stopped")
