"""The one place that builds notification-service: adapters created, wired to the domain, served.

    events consumer        <EVENTS_QUEUE> on EVENTS_EXCHANGE (order.#, user.#) → Notifications.handle
    dead-letter consumer   <EVENTS_QUEUE>.dead → the dead_letters table
    mail dispatcher        mail_outbox → SMTP
    live pusher            notifications not yet pushed (the live outbox) → the user's
                           Redis stream + the live channel, once each
    live subscriber        the live channels → this instance's SSE streams, WebSockets
                           and TCP clients (adapters.redis_fanout.LiveHub); the revocations
                           channel → those and the UDP peers of a revoked token end
                           (adapters.revocations)
    HTTP                   notifications, dead-letter admin, SSE and WebSocket, /health, /metrics
    TCP, UDP               the raw feeds

Nothing is created at import time; ``serve`` owns every resource it opens and closes
them when the server stops (SIGTERM or SIGINT).
"""

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from interchange_common.accesstokens import AccessTokenRejected, AccessTokenVerifier
from interchange_common.actors import SignedInUser
from interchange_common.database import create_engine
from interchange_common.discovery import parse_urls
from interchange_common.health import HealthCheck
from interchange_common.httpserver import serve_http
from interchange_common.messaging import Consumer, ConsumerTopology
from interchange_common.migrations import upgrade
from interchange_common.revocations import RedisRevocations
from interchange_common.rpc import grpc_target, service_channel
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from interchange_common.tasks import cancel_and_wait, every
from interchange_common.users import UserServiceClient
from notification_service.adapters.broker import AmqpRepublisher, DeadLetterConsumer
from notification_service.adapters.errors import ConsumerDisconnected
from notification_service.adapters.mail import MailDispatcher, SmtpSettings
from notification_service.adapters.pusher import LivePushDispatcher
from notification_service.adapters.redis_fanout import LiveHub
from notification_service.adapters.revocations import RedisRevocationWatch
from notification_service.adapters.store import SqlDeadLetterStore, SqlNotificationStore
from notification_service.adapters.users import GrpcUserDirectory
from notification_service.config import SERVICE_NAME, Settings
from notification_service.domain.live_connections import OpenConnections
from notification_service.domain.model import DeadLetter, Notification
from notification_service.domain.usecases import DeadLetters, Notifications
from notification_service.entrypoints.consumer import message_handler
from notification_service.entrypoints.http import create_http_app
from notification_service.entrypoints.schemas import NotificationPublic
from notification_service.entrypoints.signin import Authenticate, Rejected
from notification_service.entrypoints.sse_websocket import LiveLimits
from notification_service.entrypoints.tcp_feed import TcpFeed
from notification_service.entrypoints.udp_feed import UdpFeed

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
BINDINGS = ("order.#", "user.#")
PURGE_INTERVAL_SECONDS = 3600.0


def topology_of(settings: Settings) -> ConsumerTopology:
    return ConsumerTopology(
        exchange=settings.events_exchange,
        queue=settings.events_queue,
        bindings=BINDINGS,
        retry_delays=settings.retry_delays,
    )


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    engine: AsyncEngine
    notifications: Notifications
    dead_letters: DeadLetters
    verifier: ServiceTokenVerifier
    consumer: Consumer
    dead_letter_consumer: DeadLetterConsumer
    dispatcher: MailDispatcher
    republisher: AmqpRepublisher
    users_channel: grpc.aio.Channel | None
    store: SqlNotificationStore
    tcp_feed: TcpFeed
    udp_feed: UdpFeed
    redis: Redis
    live: LiveHub
    revocations: RedisRevocationWatch
    pusher: LivePushDispatcher

    def health_checks(self) -> list[HealthCheck]:
        async def database() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        async def rabbitmq() -> None:
            if not self.consumer.ready.is_set():
                raise ConsumerDisconnected(self.settings.events_queue)
            if not self.dead_letter_consumer.ready.is_set():
                raise ConsumerDisconnected(f"{self.settings.events_queue}.dead")

        return [
            HealthCheck(name="postgres", probe=database),
            HealthCheck(name="rabbitmq", probe=rabbitmq),
            HealthCheck(name="redis", probe=self.live.ping),
        ]

    def http_app(self) -> FastAPI:
        return create_http_app(
            notifications=self.notifications,
            dead_letters=self.dead_letters,
            verifier=self.verifier,
            health_checks=self.health_checks,
            max_body_bytes=self.settings.max_body_bytes,
            hub=self.live,
            revocations=self.revocations,
            live_limits=LiveLimits(
                heartbeat_seconds=self.settings.sse_heartbeat_seconds,
                max_message_bytes=self.settings.ws_max_message_bytes,
                max_rooms=self.settings.ws_max_rooms,
                max_sockets_per_user=self.settings.ws_max_sockets_per_user,
                max_streams_per_user=self.settings.sse_max_streams_per_user,
                idle_seconds=self.settings.ws_idle_seconds,
            ),
        )

    def background(self) -> dict[str, Coroutine[Any, Any, None]]:
        """The work that runs beside the HTTP server, by task name."""
        return {
            "events-consumer": self.consumer.run(),
            "dead-letter-consumer": self.dead_letter_consumer.run(),
            "mail-dispatcher": self.dispatcher.run(),
            "live-subscriber": self.live.run(),
            "live-pusher": self.pusher.run(),
            "retention": every(name="retention purge", seconds=PURGE_INTERVAL_SECONDS, job=self._purge),
        }

    async def _purge(self) -> None:
        purged = await self.store.purge(older_than=timedelta(days=self.settings.retention_days))
        if purged:
            _log.info("old rows purged", extra={"count": purged})

    async def close(self) -> None:
        self.live.shutdown()
        await self.tcp_feed.close()
        await self.udp_feed.close()
        await self.redis.aclose()
        if self.users_channel is not None:
            await self.users_channel.close()
        await self.republisher.close()
        await self.engine.dispose()


def redis_commands(url: str) -> Redis:
    """The client for commands: a couple of quick retries (a restarted server, a
    connection the pool kept too long), within a deadline a request can afford."""
    return Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=5,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
    )


def redis_subscriber(url: str) -> Redis:
    """The client of one pub/sub session: no retries, so that a dropped connection ends
    the session and the hub knows to have its subscribers refill from the streams."""
    return Redis.from_url(url, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0))


def build(*, settings: Settings) -> Container:
    database_url = settings.database_url.get_secret_value()
    amqp_url = settings.rabbitmq_url.get_secret_value()
    engine = create_engine(url=database_url, pool_size=settings.database_pool_size)
    users_channel = (
        None
        if settings.user_service_url is None
        else service_channel(
            target=grpc_target(settings.user_service_url),
            issuer=ServiceTokenIssuer(
                service=SERVICE_NAME, secret=settings.service_jwt_secret.get_secret_value(), ttl_seconds=300
            ),
            audience="user-service",
        )
    )
    # Names this instance in the NOTIFYs of its commits: its own outbox workers take
    # what it adds, the other instances' only what it leaves (adapters.listening).
    instance = uuid.uuid4().hex
    store = SqlNotificationStore(engine=engine, instance=instance)
    notifications = Notifications(
        store=store,
        directory=None
        if users_channel is None
        else GrpcUserDirectory(
            users=UserServiceClient(
                channel=users_channel,
                breaker=settings.breaker(upstream="user-service"),
                budget=settings.retry_budget(upstream="user-service"),
                deadline_seconds=settings.user_service_deadline_seconds,
            )
        ),
    )
    republisher = AmqpRepublisher(amqp_url=amqp_url, queue=settings.events_queue)
    dead_letters = DeadLetters(store=SqlDeadLetterStore(engine=engine), republisher=republisher)
    topology = topology_of(settings)
    redis_url = settings.redis_url.get_secret_value()
    redis = redis_commands(redis_url)
    marks = RedisRevocations(redis=redis, key_prefix=settings.redis_key_prefix)
    authenticate = _authenticator(settings, revocations=marks)
    revocations = RedisRevocationWatch(revocations=marks, connections=OpenConnections())
    live = LiveHub(
        redis=redis,
        connect_subscriber=lambda: redis_subscriber(redis_url),
        key_prefix=settings.redis_key_prefix,
        history_max_length=settings.live_history_max_length,
        history_max_age_seconds=settings.live_history_max_age_seconds,
        queue_size=settings.live_queue_size,
        listeners=[revocations],
    )
    tcp_feed = TcpFeed(
        authenticate=authenticate, hub=live, revocations=revocations, max_line_bytes=settings.tcp_max_line_bytes
    )

    def render(notification: Notification) -> bytes:
        return NotificationPublic.of(notification).model_dump_json().encode()

    consumer = Consumer(
        amqp_url=amqp_url,
        topology=topology,
        handler=message_handler(notifications=notifications, crash_after_commit=settings.crash_after_commit_before_ack),
        prefetch=settings.consumer_prefetch,
    )

    async def record(dead_letter: DeadLetter) -> None:
        await dead_letters.record(dead_letter=dead_letter)

    smtp_host, smtp_port = settings.smtp_address
    dispatcher = MailDispatcher(
        dsn=database_url,
        smtp=SmtpSettings(
            host=smtp_host,
            port=smtp_port,
            timeout_seconds=settings.smtp_timeout_seconds,
            start_tls=settings.smtp_starttls,
            sender=settings.mail_from,
        ),
        instance=instance,
    )
    return Container(
        settings=settings,
        engine=engine,
        notifications=notifications,
        dead_letters=dead_letters,
        verifier=ServiceTokenVerifier(service=SERVICE_NAME, secret=settings.service_jwt_secret.get_secret_value()),
        consumer=consumer,
        dead_letter_consumer=DeadLetterConsumer(amqp_url=amqp_url, topology=topology, record=record),
        dispatcher=dispatcher,
        republisher=republisher,
        users_channel=users_channel,
        store=store,
        tcp_feed=tcp_feed,
        udp_feed=UdpFeed(
            authenticate=authenticate, revocations=revocations, max_datagram_bytes=settings.udp_max_datagram_bytes
        ),
        redis=redis,
        live=live,
        revocations=revocations,
        pusher=LivePushDispatcher(
            dsn=database_url,
            hub=live,
            render=render,
            poll_seconds=settings.live_outbox_poll_seconds,
            instance=instance,
        ),
    )


def migrate(*, settings: Settings) -> None:
    """Bring the schema to the newest migration (several instances may race: env.py locks)."""
    upgrade(script_location=MIGRATIONS, database_url=settings.database_url.get_secret_value())


def _authenticator(settings: Settings, *, revocations: RedisRevocations) -> Authenticate:
    """Access tokens checked against user-service's published keys (JWKS_URL), and
    refused once their user's tokens are revoked (the gateway's revocation marks;
    while Redis does not answer they are let through: they still expire)."""
    jwks_urls = parse_urls(settings.jwks_url or "")
    if not jwks_urls:

        async def nobody(_: str) -> SignedInUser:
            raise Rejected("signing in is not configured here")

        return nobody

    async def fetch_jwks() -> dict[str, Any]:
        failure: Exception | None = None
        async with httpx.AsyncClient(timeout=5) as client:
            for url in jwks_urls:
                try:
                    response = await client.get(url)
                    response.raise_for_status()
                    document: dict[str, Any] = response.json()
                except (httpx.HTTPError, ValueError) as e:
                    failure = e  # that instance is down or restarting: ask the next one
                    continue
                return document
        assert failure is not None
        raise failure

    verifier = AccessTokenVerifier(fetch_jwks=fetch_jwks, issuer=settings.jwt_issuer, audience=settings.jwt_audience)

    async def authenticate(token: str) -> SignedInUser:
        try:
            user = await verifier.verify(token=token)
        except AccessTokenRejected as e:
            raise Rejected(str(e)) from e
        if await revocations.is_revoked(user_id=user.user_id, issued_at=user.issued_at):
            raise Rejected("token revoked")
        return user

    return authenticate


async def serve(*, settings: Settings) -> None:
    container = build(settings=settings)
    await container.tcp_feed.start(host=settings.host, port=settings.tcp_port)
    await container.udp_feed.start(host=settings.host, port=settings.udp_port)
    tasks = [asyncio.create_task(work, name=name) for name, work in container.background().items()]
    if settings.crash_after_commit_before_ack:
        _log.warning("fault injection on: the process kills itself after a commit that queued a mail")
    loop = asyncio.get_running_loop()

    def on_exit() -> None:
        loop.call_soon_threadsafe(container.live.shutdown)

    try:
        await serve_http(
            app=container.http_app(),
            host=settings.host,
            port=settings.http_port,
            ws_max_size=settings.ws_max_message_bytes,
            # Only the gateway connects here, over the internal network. permessage-deflate
            # compresses each frame once per socket (a room message to 100 members, 100
            # times): it used to take half the CPU of a room's fan-out (tests/bench/bench_live.py).
            ws_compression=False,
            # SSE streams and WebSockets end at once, not after the drain's grace period.
            on_exit=on_exit,
        )
    finally:
        await cancel_and_wait(tasks)
        await container.close()
        _log.info("stopped")
