"""The one place that builds the gateway: clients created, the app wired, served.

Nothing is created at import time; ``serve`` owns every resource it opens and
closes them when the server stops (SIGTERM or SIGINT). Besides the HTTP app it
runs the consumer of the user events that revoke tokens, and the keeper of the
revocation marks (Redis's, and this instance's copy: adapters.revocations).
"""

import asyncio
import logging
from dataclasses import dataclass

from fastapi import FastAPI
from redis.asyncio import Redis

from gateway.adapters.apidocs import ApiDocuments
from gateway.adapters.ratelimiter import RedisCallerCheck, RedisRateLimiter
from gateway.adapters.revocations import RevocationHandler, RevocationKeeper, UserServiceRevocations
from gateway.adapters.tickets import RedisTicketStore
from gateway.adapters.tokens import JwksTokenVerifier
from gateway.adapters.upstream import UpstreamClient
from gateway.config import SERVICE_NAME, Settings
from gateway.domain.model import RateLimitPolicy, Upstream
from gateway.domain.revocations import RevocationMarks
from gateway.domain.routes import NOTIFICATIONS, ORDERS, ROUTES, USERS
from gateway.entrypoints.http import LiveSetup, create_app, operations_app
from gateway.entrypoints.passthrough import LiveConnections
from gateway.entrypoints.server import Listeners, serve_http
from interchange_common.discovery import Discovery, parse_urls
from interchange_common.health import HealthCheck, Probe
from interchange_common.messaging import Consumer, ConsumerTopology
from interchange_common.revocations import RedisRevocations
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.tasks import cancel_and_wait, every

_log = logging.getLogger(__name__)


def upstreams(*, settings: Settings) -> dict[str, Upstream]:
    """The services behind the gateway (the seed's registerService calls)."""
    return {
        USERS: Upstream(
            name=USERS,
            audience="user-service",
            timeout_seconds=settings.user_service_timeout_seconds,
            max_in_flight=settings.user_service_max_in_flight,
        ),
        ORDERS: Upstream(
            name=ORDERS,
            audience="order-service",
            timeout_seconds=settings.order_service_timeout_seconds,
            max_in_flight=settings.order_service_max_in_flight,
            idempotency_keys=True,
        ),
        NOTIFICATIONS: Upstream(
            name=NOTIFICATIONS,
            audience="notification-service",
            timeout_seconds=settings.notification_service_timeout_seconds,
            max_in_flight=settings.notification_service_max_in_flight,
        ),
    }


def static_urls(*, settings: Settings) -> dict[str, list[str]]:
    """Each service's instances as the *_SERVICE_URL settings list them (static discovery)."""
    return {
        "user-service": parse_urls(settings.user_service_url),
        "order-service": parse_urls(settings.order_service_url),
        "notification-service": parse_urls(settings.notification_service_url),
    }


def revocation_topology(*, exchange: str, queue: str) -> ConsumerTopology:
    """The gateway's queue: the user events that end a user's tokens."""
    return ConsumerTopology(exchange=exchange, queue=queue, bindings=("user.updated", "user.deleted"))


def policies(*, settings: Settings) -> dict[str, RateLimitPolicy]:
    return {
        "default": RateLimitPolicy("default", settings.rate_limit_requests, settings.rate_limit_window_seconds),
        "auth": RateLimitPolicy("auth", settings.auth_rate_limit_requests, settings.auth_rate_limit_window_seconds),
    }


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    discovery: Discovery
    upstream: UpstreamClient
    redis: Redis
    verifier: JwksTokenVerifier
    revocations: RedisRevocations
    marks: RevocationMarks
    keeper: RevocationKeeper
    consumer: Consumer
    limiter: RedisRateLimiter
    callers: RedisCallerCheck
    tickets: RedisTicketStore
    connections: LiveConnections
    issuer: ServiceTokenIssuer

    def health_checks(self) -> list[HealthCheck]:
        async def redis() -> None:
            await self.redis.ping()

        timeout = self.settings.health_timeout_seconds
        checks = [
            HealthCheck(name=target.audience, probe=_prober(self.upstream, name), timeout_seconds=timeout)
            for name, target in self.upstream.upstreams.items()
        ]
        checks.append(HealthCheck(name="redis", probe=redis, timeout_seconds=timeout))
        return checks

    def http_app(self) -> FastAPI:
        settings = self.settings
        return create_app(
            routes=ROUTES,
            policies=policies(settings=settings),
            upstream=self.upstream,
            verify=self.verifier.verify_authorization,
            hit=self.limiter.hit,
            check=self.callers.standing,
            issuer=self.issuer,
            health_checks=self.health_checks,
            cors_origins=settings.cors_origins,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_seconds=settings.request_body_timeout_seconds,
            live=LiveSetup(
                upstream_name=NOTIFICATIONS,
                tickets=self.tickets,
                allowed_origins=settings.ws_allowed_origins,
                connections=self.connections,
            ),
            api_documents=ApiDocuments(
                fetch=lambda name: self.upstream.get_json(upstream=name, path="/openapi.json"),
                upstreams=list(self.upstream.upstreams),
                routes=ROUTES,
            ),
            in_flight_wait_seconds=settings.in_flight_wait_seconds,
        )

    async def close(self) -> None:
        await self.upstream.close()
        await self.discovery.close()
        await self.redis.aclose()


def _prober(upstream: UpstreamClient, name: str) -> Probe:
    async def probe() -> None:
        await upstream.probe(upstream=name)

    return probe


async def build(*, settings: Settings) -> Container:
    """Everything wired, nothing running yet (asynchronous: the upstream session opens,
    and the access-token keys are fetched once before the first request needs them)."""
    targets = upstreams(settings=settings)
    discovery = settings.make_discovery(static_urls=static_urls(settings=settings))
    upstream = UpstreamClient(
        upstreams=targets,
        balancers={name: settings.balancer(service=t.audience, discovery=discovery) for name, t in targets.items()},
        breakers={name: settings.breaker(upstream=t.audience) for name, t in targets.items()},
        budgets={name: settings.retry_budget(upstream=t.audience) for name, t in targets.items()},
        live_read_timeout_seconds=settings.live_read_timeout_seconds,
    )
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
    )
    revocations = RedisRevocations(
        redis=redis, key_prefix=settings.redis_key_prefix, ttl_seconds=settings.revocation_ttl_seconds
    )
    limiter = RedisRateLimiter(
        redis=redis, key_prefix=settings.redis_key_prefix, on_failure=settings.rate_limit_on_redis_failure
    )
    marks = RevocationMarks(ttl_seconds=settings.revocation_ttl_seconds)
    issuer = ServiceTokenIssuer(
        service=SERVICE_NAME,
        secret=settings.service_jwt_secret.get_secret_value(),
        ttl_seconds=settings.service_token_ttl_seconds,
    )
    container = Container(
        settings=settings,
        discovery=discovery,
        upstream=upstream,
        redis=redis,
        verifier=JwksTokenVerifier(
            fetch_jwks=lambda: upstream.get_json(upstream=USERS, path="/.well-known/jwks.json"),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        ),
        revocations=revocations,
        marks=marks,
        keeper=RevocationKeeper(
            revocations=revocations,
            marks=marks,
            source=UserServiceRevocations(
                upstream=upstream, upstream_name=USERS, audience=targets[USERS].audience, issuer=issuer
            ),
            refresh_seconds=settings.revocation_refresh_seconds,
        ),
        consumer=Consumer(
            amqp_url=settings.rabbitmq_url.get_secret_value(),
            topology=revocation_topology(exchange=settings.events_exchange, queue=settings.events_queue),
            handler=RevocationHandler(revocations=revocations, marks=marks),
        ),
        limiter=limiter,
        callers=RedisCallerCheck(redis=redis, limiter=limiter, revocations=revocations, marks=marks),
        tickets=RedisTicketStore(
            redis=redis, key_prefix=settings.redis_key_prefix, ttl_seconds=settings.ticket_ttl_seconds
        ),
        connections=LiveConnections(),
        issuer=issuer,
    )
    try:
        await upstream.start()
        await container.verifier.refresh()
    except BaseException:
        await container.close()
        raise
    return container


async def serve(*, settings: Settings) -> None:
    container = await build(settings=settings)
    consuming = asyncio.create_task(container.consumer.run(), name="revocations")
    keeping = asyncio.create_task(
        every(name="revocation keeper", seconds=settings.revocation_check_seconds, job=container.keeper.check),
        name="revocation keeper",
    )
    try:
        await serve_http(
            app=container.http_app(),
            listeners=Listeners(
                host=settings.host,
                http_port=settings.http_port,
                https_port=settings.https_port,
                cert_file=settings.tls_cert_file,
                key_file=settings.tls_key_file,
                ops_port=settings.ops_port,
            ),
            operations=operations_app(health_checks=container.health_checks),
            grace_seconds=settings.shutdown_grace_seconds,
            on_shutdown=container.connections.end_all,
            head_timeout_seconds=settings.request_head_timeout_seconds,
        )
    finally:
        await cancel_and_wait([consuming, keeping])
        await container.close()
        _log.info("stopped")
