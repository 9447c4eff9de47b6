"""The one place that builds the gateway: clients created, the app wired, served."""

import logging

from redis.asyncio import Redis

from gateway.adapters.ratelimiter import RedisRateLimiter
from gateway.adapters.tokens import JwksTokenVerifier
from gateway.adapters.upstream import UpstreamClient
from gateway.config import SERVICE_NAME, Settings
from gateway.domain.model import RateLimitPolicy, Upstream
from gateway.domain.routes import NOTIFICATIONS, ORDERS, ROUTES, USERS
from gateway.entrypoints.http import create_app
from interchange_common.health import HealthCheck, Probe
from interchange_common.httpserver import serve_http
from interchange_common.servicejwt import ServiceTokenIssuer

_log = logging.getLogger(__name__)


def upstreams(*, settings: Settings) -> dict[str, Upstream]:
    """The services behind the gateway (the seed's registerService calls)."""
    return {
        USERS: Upstream(
            name=USERS,
            url=settings.user_service_url.rstrip("/"),
            audience="user-service",
            timeout_seconds=settings.user_service_timeout_seconds,
        ),
        ORDERS: Upstream(
            name=ORDERS,
            url=settings.order_service_url.rstrip("/"),
            audience="order-service",
            timeout_seconds=settings.order_service_timeout_seconds,
        ),
        NOTIFICATIONS: Upstream(
            name=NOTIFICATIONS,
            url=settings.notification_service_url.rstrip("/"),
            audience="notification-service",
            timeout_seconds=settings.notification_service_timeout_seconds,
        ),
    }


def policies(*, settings: Settings) -> dict[str, RateLimitPolicy]:
    return {
        "default": RateLimitPolicy("default", settings.rate_limit_requests, settings.rate_limit_window_seconds),
        "auth": RateLimitPolicy("auth", settings.auth_rate_limit_requests, settings.auth_rate_limit_window_seconds),
    }


async def serve(*, settings: Settings) -> None:
    upstream = UpstreamClient(upstreams=upstreams(settings=settings))
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(), socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
    )
    await upstream.start()
    try:
        verifier = JwksTokenVerifier(
            fetch_jwks=lambda: upstream.get_json(upstream=USERS, path="/.well-known/jwks.json"),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        await verifier.refresh()
        limiter = RedisRateLimiter(redis=redis, key_prefix=settings.redis_key_prefix)

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
            verify=verifier.verify_authorization,
            hit=limiter.hit,
            issuer=ServiceTokenIssuer(
                service=SERVICE_NAME,
                secret=settings.service_jwt_secret.get_secret_value(),
                ttl_seconds=settings.service_token_ttl_seconds,
            ),
            health_checks=health_checks,
            cors_origins=settings.cors_origins,
            max_body_bytes=settings.max_body_bytes,
        )
        _log.info("serving", extra={"http_port": settings.http_port})
        await serve_http(app=app, host=settings.host, port=settings.http_port)
    finally:
        await upstream.close()
        await redis.aclose()
        _log.info("stopped")


def _prober(upstream: UpstreamClient, name: str) -> Probe:
    async def probe() -> None:
        await upstream.probe(upstream=name)

    return probe
