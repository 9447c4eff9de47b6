"""The one place that builds order-service: adapters created, wired to the domain, served.

Nothing is created at import time; ``serve`` owns every resource it opens and
closes them when the server stops (SIGTERM or SIGINT). Besides the HTTP API it
runs the projection that keeps the read model up to date, a purge of expired
idempotency keys, and a count of the projection's parked events (another instance
may have parked, replayed or skipped one since).
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from interchange_common.database import create_engine
from interchange_common.health import HealthCheck, Probe
from interchange_common.httpserver import serve_http
from interchange_common.migrations import upgrade
from interchange_common.projections import GrpcEventSource, ProjectionRunner
from interchange_common.rpc import grpc_target, service_channel
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from interchange_common.tasks import cancel_and_wait, every, run_forever
from interchange_common.users import UserServiceClient
from order_service.adapters.event_store import EventStoreOrders
from order_service.adapters.idempotency import SqlIdempotencyKeys
from order_service.adapters.read_model import OrderQueries, ProjectionParkedEvents, project
from order_service.adapters.users import GrpcUserDirectory
from order_service.config import SERVICE_NAME, Settings
from order_service.domain.usecases import Orders, ParkedEventAdmin
from order_service.entrypoints.http import create_http_app

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
PROJECTION = "orders"
KEY_PURGE_INTERVAL_SECONDS = 600.0
# As often as Prometheus scrapes: an alert on parked events ends soon after the last
# one is replayed or skipped, whichever instance did it.
PARKED_COUNT_INTERVAL_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    engine: AsyncEngine
    events_channel: grpc.aio.Channel
    users_channel: grpc.aio.Channel
    projection: ProjectionRunner
    keys: SqlIdempotencyKeys
    orders: Orders
    parked: ParkedEventAdmin
    verifier: ServiceTokenVerifier

    def health_checks(self) -> list[HealthCheck]:
        async def database() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        return [
            HealthCheck(name="postgres", probe=database),
            HealthCheck(name="event-store", probe=_grpc_serving(self.events_channel)),
        ]

    async def close(self) -> None:
        await self.events_channel.close()
        await self.users_channel.close()
        await self.engine.dispose()


def _grpc_serving(channel: grpc.aio.Channel) -> Probe:
    stub = health_pb2_grpc.HealthStub(channel)

    async def probe() -> None:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError("not serving")

    return probe


def build(*, settings: Settings) -> Container:
    engine = create_engine(url=settings.database_url.get_secret_value(), pool_size=settings.database_pool_size)
    issuer = ServiceTokenIssuer(
        service=SERVICE_NAME, secret=settings.service_jwt_secret.get_secret_value(), ttl_seconds=300
    )
    events_channel = service_channel(
        target=grpc_target(settings.event_store_url), issuer=issuer, audience="event-store"
    )
    users_channel = service_channel(
        target=grpc_target(settings.user_service_url), issuer=issuer, audience="user-service"
    )
    projection = ProjectionRunner(
        name=PROJECTION, engine=engine, source=GrpcEventSource(channel=events_channel), handler=project
    )
    keys = SqlIdempotencyKeys(engine=engine, ttl=timedelta(seconds=settings.idempotency_key_ttl_seconds))
    orders = Orders(
        store=EventStoreOrders(
            channel=events_channel,
            breaker=settings.breaker(upstream="event-store"),
            budget=settings.retry_budget(upstream="event-store"),
            deadline_seconds=settings.event_store_deadline_seconds,
            snapshot_every=settings.snapshot_every,
        ),
        users=GrpcUserDirectory(
            users=UserServiceClient(
                channel=users_channel,
                breaker=settings.breaker(upstream="user-service"),
                budget=settings.retry_budget(upstream="user-service"),
                deadline_seconds=settings.user_service_deadline_seconds,
            )
        ),
        read_model=OrderQueries(engine=engine),
        keys=keys,
    )
    parked = ParkedEventAdmin(parked=ProjectionParkedEvents(parked=projection.parked))
    verifier = ServiceTokenVerifier(service=SERVICE_NAME, secret=settings.service_jwt_secret.get_secret_value())
    return Container(
        settings=settings,
        engine=engine,
        events_channel=events_channel,
        users_channel=users_channel,
        projection=projection,
        keys=keys,
        orders=orders,
        parked=parked,
        verifier=verifier,
    )


def migrate(*, settings: Settings) -> None:
    """Bring the schema to the newest migration (several instances may race: env.py locks)."""
    upgrade(script_location=MIGRATIONS, database_url=settings.database_url.get_secret_value())


async def _project(container: Container) -> None:
    async def session(connected: Callable[[], None]) -> None:
        await container.events_channel.channel_ready()
        connected()
        await container.projection.run()

    await run_forever(name="orders projection", session=session)


async def _purge_keys(keys: SqlIdempotencyKeys) -> None:
    purged = await keys.purge_expired()
    if purged:
        _log.info("expired idempotency keys purged", extra={"count": purged})


async def serve(*, settings: Settings) -> None:
    container = build(settings=settings)
    purge = every(
        name="idempotency key purge", seconds=KEY_PURGE_INTERVAL_SECONDS, job=lambda: _purge_keys(container.keys)
    )
    count_parked = every(
        name="parked event count", seconds=PARKED_COUNT_INTERVAL_SECONDS, job=container.projection.parked.refresh
    )
    background = [
        asyncio.create_task(purge, name="key-purge"),
        asyncio.create_task(count_parked, name="parked-count"),
    ]
    if settings.projection_enabled:
        background.append(asyncio.create_task(_project(container), name="projection"))
    try:
        app = create_http_app(
            orders=container.orders,
            parked=container.parked,
            verifier=container.verifier,
            health_checks=container.health_checks,
            max_body_bytes=settings.max_body_bytes,
        )
        await serve_http(app=app, host=settings.host, port=settings.http_port)
    finally:
        await cancel_and_wait(background)
        await container.close()
        _log.info("stopped")
