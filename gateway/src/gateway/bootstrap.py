"""The one place that builds the gateway: clients created, the app wired, served."""

import asyncio
import logging

from redis.asyncio import Redis

from gateway.adapters.apidocs import ApiDocuments
from gateway.adapters.ratelimiter import RedisRateLimiter
from gateway.adapters.revocations import RevocationHandler, checked
from gateway.adapters.tickets import RedisTicketStore
from gateway.adapters.tokens import JwksTokenVerifier
from gateway.adapters.upstream import UpstreamClient
from gateway.config import SERVICE_NAME, Settings
from gateway.domain.model import RateLimitPolicy, Upstream
from gateway.domain.routes import NOTIFICATIONS, ORDERS, ROUTES, USERS
from gateway.entrypoints.http import LiveSetup, create_app
from gateway.entrypoints.live import LiveConnections
from gateway.entrypoints.server import Listeners, serve_http
from interchange_common.discovery import parse_urls
from interchange_common.health import HealthCheck, Probe
from interchange_common.messaging import Consumer, ConsumerTopology
from interchange_common.revocations import RedisRevocations
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.tasks import cancel_and_wait

_log = logging.getLogger(__name__)


def upstreams(*, settings: Settings) -> dict[str, Upstream]:
    """The services behind the gateway (the seed's registerService calls)."""
    return {
        USERS: Upstream(name=USERS, audience="user-service", timeout_seconds=settings.user_service_timeout_seconds),
        ORDERS: Upstream(name=ORDERS, audience="order-service", timeout_seconds=settings.order_service_timeout_seconds),
        NOTIFICATIONS: Upstream(
            name=NOTIFICATIONS,
            audience="notification-service",
            timeout_seconds=settings.notification_service_timeout_seconds,
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


async def serve(*, settings: Settings) -> None:
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
    await upstream.start()
    consuming: asyncio.Task[None] | None = None
    try:
        verifier = JwksTokenVerifier(
            fetch_jwks=lambda: upstream.get_json(upstream=USERS, path="/.well-known/jwks.json"),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        await verifier.refresh()
        revocations = RedisRevocations(
            redis=redis, key_prefix=settings.redis_key_prefix, ttl_seconds=settings.revocation_ttl_seconds
        )
        consumer = Consumer(
            amqp_url=settings.rabbitmq_url.get_secret_value(),
            topology=revocation_topology(exchange=settings.events_exchange, queue=settings.events_queue),
            handler=RevocationHandler(revocations=revocations),
        )
        consuming = asyncio.create_task(consumer.run(), name="revocations")
        verify = checked(verify=verifier.verify_authorization, revocations=revocations)
        limiter = RedisRateLimiter(
            redis=redis, key_prefix=settings.redis_key_prefix, on_failure=settings.rate_limit_on_redis_failure
        )
        tickets = RedisTicketStore(
            redis=redis, key_prefix=settings.redis_key_prefix, ttl_seconds=settings.ticket_ttl_seconds
        )
        connections = LiveConnections()

        async def ping_redis() -> None:
            await redis.ping()

        def health_checks() -> list[HealthCheck]:
            checks = [
                HealthCheck(
                    name=target.audience,
                    probe=_prober(upstream, name),
                    timeout_seconds=settings.health_timeout_seconds,
                )
                for name, target in upstream.upstreams.items()
            ]
            checks.append(HealthCheck(name="redis", probe=ping_redis, timeout_seconds=settings.health_timeout_seconds))
            return checks

        app = create_app(
            routes=ROUTES,
            policies=policies(settings=settings),
            upstream=upstream,
            verify=verify,
            hit=limiter.hit,
            issuer=ServiceTokenIssuer(
                service=SERVICE_NAME,
                secret=settings.service_jwt_secret.get_secret_value(),
                ttl_seconds=settings.service_token_ttl_seconds,
            ),
            health_checks=health_checks,
            cors_origins=settings.cors_origins,
            max_body_bytes=settings.max_body_bytes,
            body_timeout_seconds=settings.request_body_timeout_seconds,
            live=LiveSetup(
                upstream_name=NOTIFICATIONS,
                tickets=tickets,
                allowed_origins=settings.ws_allowed_origins,
                connections=connections,
            ),
            api_documents=ApiDocuments(
                fetch=lambda name: upstream.get_json(upstream=name, path="/openapi.json"),
                upstreams=list(targets),
                routes=ROUTES,
            ),
        )
        await serve_http(
            app=app,
            listeners=Listeners(
                host=settings.host,
                http_port=settings.http_port,
                https_port=settings.https_port,
                cert_file=settings.tls_cert_file,
                key_file=settings.tls_key_file,
            ),
            grace_seconds=settings.shutdown_grace_seconds,
            on_shutdown=connections.end_all,
            head_timeout_seconds=settings.request_head_timeout_seconds,
        )
    finally:
        if consuming is not None:
            await cancel_and_wait([consuming])
        await upstream.close()
        await discovery.close()
        await redis.aclose()
        _log.info("stopped")


def _prober(upstream: UpstreamClient, name: str) -> Probe:
    async def probe() -> None:
        await upstream.probe(upstream=name)

    return probe
