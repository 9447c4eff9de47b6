"""The gateway app forwarding to a real upstream server, with the real Redis limiter
and revocation marks."""

import asyncio
import logging
import time
import uuid

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from devstack.testing import free_port
from gateway.adapters.ratelimiter import RedisCallerCheck, RedisRateLimiter
from gateway.adapters.upstream import UpstreamClient
from gateway.domain.errors import AuthenticationFailed, UpstreamUnavailable
from gateway.domain.model import Access, Principal, RateLimitPolicy, Route, Upstream
from gateway.entrypoints.forwarding import Check, Hit
from gateway.entrypoints.http import create_app
from interchange_common.resilience import BreakerState, CircuitBreaker
from interchange_common.revocations import RedisRevocations
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier

pytestmark = pytest.mark.integration
SECRET = "proxy-test-secret-" + "z" * 32
ROUTES = (
    Route("GET", "/api/things/{thing_id}", "things", "/internal/things/{thing_id}", Access.USER),
    Route("POST", "/api/things/{thing_id}/cancel", "things", "/internal/things/{thing_id}/cancel", Access.USER),
    Route("GET", "/api/me", "things", "/internal/owners/{actor_id}", Access.USER),
    Route("GET", "/api/admin/things", "things", "/internal/things", Access.ADMIN),
    Route("POST", "/api/things", "things", "/internal/things", Access.PUBLIC, rate_limit="strict"),
    Route("GET", "/api/down", "down", "/anything", Access.PUBLIC),
    Route("GET", "/api/slow", "slow", "/slow", Access.PUBLIC),
)
ISSUED_AT = time.time() - 60
USERS = {
    "user-token": Principal(uuid.uuid4(), frozenset({"user"}), expires_at=2**40, issued_at=ISSUED_AT),
    "admin-token": Principal(uuid.uuid4(), frozenset({"admin", "user"}), expires_at=2**40, issued_at=ISSUED_AT),
}


async def verify(*, header):
    token = (header or "").removeprefix("Bearer ")
    if token not in USERS:
        raise AuthenticationFailed("invalid token")
    return USERS[token]


def signed_in(*, roles: frozenset[str] = frozenset({"user"})) -> tuple[str, Principal]:
    """A new user's token (issued a minute ago), known to ``verify`` from now on."""
    token = f"token-{uuid.uuid4().hex}"
    USERS[token] = Principal(uuid.uuid4(), roles, expires_at=2**40, issued_at=time.time() - 60)
    return token, USERS[token]


def caller_check(*, redis: Redis, limiter: RedisRateLimiter, key_prefix: str) -> Check:
    revocations = RedisRevocations(redis=redis, key_prefix=key_prefix)
    return RedisCallerCheck(redis=redis, limiter=limiter, revocations=revocations).standing


@pytest.fixture(scope="module")
def revocations(redis, key_prefix) -> RedisRevocations:
    return RedisRevocations(redis=redis, key_prefix=key_prefix)


@pytest.fixture(scope="module")
async def client(upstream, redis, limiter, key_prefix, balancer_over):
    forwarder = forwarder_to(upstream.url, balancer_over=balancer_over)
    await forwarder.start()
    check = caller_check(redis=redis, limiter=limiter, key_prefix=key_prefix)
    app = gateway_app(forwarder=forwarder, hit=limiter.hit, check=check, key_prefix=key_prefix)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client
    await forwarder.close()


def forwarder_to(url: str, *, balancer_over) -> UpstreamClient:
    upstreams = {
        "things": Upstream("things", audience="thing-service"),
        "down": Upstream("down", audience="down-service"),
        "slow": Upstream("slow", audience="thing-service", timeout_seconds=0.2),
    }
    balancers = {
        "things": balancer_over(url),
        "down": balancer_over(f"http://127.0.0.1:{free_port()}"),
        "slow": balancer_over(url),
    }
    return UpstreamClient(upstreams=upstreams, balancers=balancers)


def gateway_app(
    *, forwarder: UpstreamClient, hit: Hit, check: Check, key_prefix: str, default_limit: int = 1000
) -> FastAPI:
    return create_app(
        routes=ROUTES,
        policies={
            "default": RateLimitPolicy(f"default-{key_prefix}", default_limit, 60),
            "strict": RateLimitPolicy(f"strict-{key_prefix}", 3, 60),
        },
        upstream=forwarder,
        verify=verify,
        hit=hit,
        check=check,
        issuer=ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=300),
        health_checks=lambda: [],
        cors_origins=["https://app.example.com"],
        max_body_bytes=1024,
    )


async def test_a_request_is_forwarded_with_a_service_token_the_actor_and_the_request_id(client, upstream):
    response = await client.get(
        "/api/things/abc?x=1&y=2", headers={"Authorization": "Bearer user-token", "X-Request-ID": "rid-42"}
    )
    assert response.status_code == 200
    assert response.json() == {"path": "/internal/things/abc", "query": "x=1&y=2"}
    assert response.headers["etag"] == '"7"'
    assert "x-internal" not in response.headers
    assert response.headers["x-request-id"] == "rid-42"
    assert response.headers["ratelimit-limit"] == "1000"
    seen = upstream.seen[-1]
    assert seen.headers["X-Request-ID"] == "rid-42"
    assert seen.headers["X-Actor-Id"] == str(USERS["user-token"].user_id)
    assert seen.headers["X-Actor-Roles"] == "user"
    service_token = seen.headers["Authorization"].removeprefix("Bearer ")
    assert service_token != "user-token"
    caller = ServiceTokenVerifier(service="thing-service", secret=SECRET).verify(token=service_token)
    assert caller.service == "gateway"


async def test_the_actor_id_fills_the_upstream_path(client, upstream):
    response = await client.get("/api/me", headers={"Authorization": "Bearer admin-token"})
    assert response.json()["path"] == f"/internal/owners/{USERS['admin-token'].user_id}"


async def test_no_or_bad_token_is_401_and_nothing_is_forwarded(client, upstream):
    before = len(upstream.seen)
    for headers in ({}, {"Authorization": "Bearer forged"}):
        response = await client.get("/api/things/abc", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
    assert len(upstream.seen) == before


async def test_admin_routes_are_403_for_users(client, upstream):
    before = len(upstream.seen)
    assert (await client.get("/api/admin/things", headers={"Authorization": "Bearer user-token"})).status_code == 403
    assert (await client.get("/api/admin/things", headers={"Authorization": "Bearer admin-token"})).status_code == 200
    assert len(upstream.seen) == before + 1


async def test_bodies_pass_through_and_the_limit_applies(client, upstream):
    statuses = []
    for i in range(5):
        response = await client.post(
            "/api/things", content=f'{{"n": {i}}}', headers={"content-type": "application/json"}
        )
        statuses.append(response.status_code)
    assert statuses == [201, 201, 201, 429, 429]
    assert upstream.bodies[-1] == b'{"n": 2}'
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"


async def test_a_dead_upstream_is_a_fast_503(client):
    response = await client.get("/api/down")
    assert response.status_code == 503
    assert response.json()["detail"] == "down-service is unavailable"


async def test_a_dead_upstream_opens_its_breaker_and_is_then_refused_without_trying(client):
    def state() -> float | None:
        return REGISTRY.get_sample_value("circuit_breaker_state", {"breaker": "down-service"})

    for _ in range(6):  # five failures in a row open it
        response = await client.get("/api/down")
        assert response.status_code == 503
        if state() == 2:
            break
    assert state() == 2
    refused = await client.get("/api/down")
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 1  # the breaker's cool-down, not "try again now"


async def test_a_json_document_the_upstream_does_not_have_is_an_answer_not_a_failure(upstream, balancer_over):
    breaker = CircuitBreaker(name="json-service", failures_to_open=2)
    forwarder = UpstreamClient(
        upstreams={"json": Upstream("json", audience="json-service")},
        balancers={"json": balancer_over(upstream.url)},
        breakers={"json": breaker},
    )
    await forwarder.start()
    try:
        for _ in range(4):
            with pytest.raises(UpstreamUnavailable, match="with 404"):
                await forwarder.get_json(upstream="json", path="/missing")
        assert breaker.state is BreakerState.CLOSED  # a 404 is the service's answer
        assert await forwarder.get_json(upstream="json", path="/.well-known/jwks.json") == {"keys": []}
    finally:
        await forwarder.close()


async def test_the_route_timeout_reaches_the_upstream_as_its_deadline(client, upstream):
    response = await client.get("/api/slow")
    assert response.status_code == 200
    assert 0 < int(upstream.seen[-1].headers["X-Request-Timeout-Ms"]) <= 200


async def test_a_slow_upstream_is_a_504(client, upstream):
    upstream.delay = 1.0
    try:
        response = await client.get("/api/slow")
    finally:
        upstream.delay = 0.0
    assert response.status_code == 504


async def test_a_query_parameter_given_twice_is_refused_and_not_forwarded(client, upstream):
    before = len(upstream.seen)
    response = await client.get("/api/things/7?page=1&page=x", headers={"Authorization": "Bearer user-token"})
    assert response.status_code == 400
    assert response.json()["detail"] == "query parameter 'page' is given more than once"
    assert len(upstream.seen) == before
    assert (
        await client.get("/api/things/7?page=1&limit=2", headers={"Authorization": "Bearer user-token"})
    ).status_code == 200


async def test_path_traversal_never_reaches_the_upstream(client, upstream):
    before = len(upstream.seen)
    response = await client.get("/api/things/..", headers={"Authorization": "Bearer user-token"})
    assert response.status_code == 404
    assert len(upstream.seen) == before


@pytest.mark.parametrize("slash", ["%2F", "%2f"])
async def test_an_encoded_slash_is_part_of_its_segment_and_never_reaches_the_upstream(client, upstream, slash):
    user = {"Authorization": "Bearer user-token"}
    before = len(upstream.seen)
    # Decoded before routing, these were POST /api/things/7/cancel and GET /api/me.
    cancel = await client.post(f"/api/things/7{slash}cancel", headers=user)
    assert cancel.status_code == 405  # /api/things/{thing_id}, as for any one segment there
    assert "POST" not in cancel.headers["allow"]
    assert (await client.get(f"/api/things/7{slash}cancel", headers=user)).status_code == 404
    assert (await client.get(f"/api{slash}me", headers=user)).status_code == 404
    assert len(upstream.seen) == before
    assert (await client.post("/api/things/7/cancel", headers=user)).json()["path"] == "/internal/things/7/cancel"


async def test_an_upstream_429_keeps_its_own_retry_after_and_limit(client, upstream):
    response = await client.get("/api/things/limited", headers={"Authorization": "Bearer user-token"})
    assert response.status_code == 429
    # The upstream's limit refused the call, not the gateway's (1000 here).
    assert {name: response.headers[name] for name in upstream.limited_headers} == upstream.limited_headers


async def test_large_bodies_are_413(client):
    response = await client.post("/api/things", content=b"x" * 4096)
    assert response.status_code == 413


async def test_cors_preflight_for_an_allowed_origin(client):
    response = await client.options(
        "/api/things",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    refused = await client.options(
        "/api/things", headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in refused.headers


async def test_a_rate_limiter_failing_closed_answers_503_while_redis_is_down(
    upstream, balancer_over, key_prefix, private_redis
):
    server = private_redis
    redis = Redis.from_url(server.url, socket_connect_timeout=0.3, socket_timeout=0.3)
    limiter = RedisRateLimiter(redis=redis, key_prefix=key_prefix, on_failure="closed")
    check = caller_check(redis=redis, limiter=limiter, key_prefix=key_prefix)
    forwarder = forwarder_to(upstream.url, balancer_over=balancer_over)
    await forwarder.start()
    app = gateway_app(forwarder=forwarder, hit=limiter.hit, check=check, key_prefix=key_prefix)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            signed_in = {"Authorization": "Bearer user-token"}
            assert (await client.get("/api/things/a", headers=signed_in)).status_code == 200
            await asyncio.to_thread(server.stop)
            refused = await client.get("/api/things/a", headers=signed_in)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["detail"] == "the rate limiter is unavailable; try again shortly"
            # A caller the route refuses is not counted, so Redis being down does not change its answer.
            assert (await client.get("/api/admin/things", headers=signed_in)).status_code == 403
            public = await client.post("/api/things", content=b"{}")
            assert public.status_code == 503
    finally:
        await forwarder.close()
        await redis.aclose()


async def test_a_rate_limiter_failing_open_lets_tokens_through_and_limits_in_the_instance(
    upstream, balancer_over, key_prefix, private_redis, caplog
):
    redis = Redis.from_url(private_redis.url, socket_connect_timeout=0.3, socket_timeout=0.3)
    limiter = RedisRateLimiter(redis=redis, key_prefix=key_prefix, on_failure="open")
    check = caller_check(redis=redis, limiter=limiter, key_prefix=key_prefix)
    forwarder = forwarder_to(upstream.url, balancer_over=balancer_over)
    await forwarder.start()
    app = gateway_app(forwarder=forwarder, hit=limiter.hit, check=check, key_prefix=key_prefix, default_limit=3)
    token, principal = signed_in()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            await RedisRevocations(redis=redis, key_prefix=key_prefix).revoke(user_id=principal.user_id, at=time.time())
            assert (await client.get("/api/things/a", headers={"Authorization": f"Bearer {token}"})).status_code == 401
            await asyncio.to_thread(private_redis.stop)
            with caplog.at_level(logging.WARNING):
                statuses = [
                    (await client.get("/api/things/a", headers={"Authorization": f"Bearer {token}"})).status_code
                    for _ in range(4)
                ]
            # The mark cannot be read: the token passes (it still expires), limited in this instance.
            assert statuses == [200, 200, 200, 429]
            warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
            assert (
                warnings
                == [
                    "revocations unavailable, token not checked",
                    "rate limiter unavailable, counting in this instance",
                ]
                * 4
            )
    finally:
        await forwarder.close()
        await redis.aclose()


async def test_a_revoked_token_is_401_counted_against_the_address_and_never_forwarded(
    client, upstream, redis, key_prefix, revocations
):
    token, principal = signed_in()
    user_counter = f"{{{key_prefix}:rl:default-{key_prefix}:user:{principal.user_id}}}:*"
    address_counter = f"{{{key_prefix}:rl:default-{key_prefix}:ip:127.0.0.1}}:*"
    assert (await client.get("/api/things/a", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    await revocations.revoke(user_id=principal.user_id, at=time.time())
    before, counted_for_user, counted_for_address = (
        len(upstream.seen),
        await counted(redis, user_counter),
        await counted(redis, address_counter),
    )
    for path in ("/api/things/a", "/api/admin/things"):  # revoked comes before forbidden
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json()["detail"] == "token revoked"
        assert response.headers["www-authenticate"] == "Bearer"
    assert len(upstream.seen) == before
    assert await counted(redis, user_counter) == counted_for_user
    assert await counted(redis, address_counter) == counted_for_address + 2
    # A token of the same user issued after the mark (a new sign-in) passes.
    USERS[token] = Principal(principal.user_id, principal.roles, expires_at=2**40, issued_at=time.time() + 1)
    assert (await client.get("/api/things/a", headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_a_forbidden_caller_is_not_counted(client, redis, key_prefix):
    token, principal = signed_in()
    user_counter = f"{{{key_prefix}:rl:default-{key_prefix}:user:{principal.user_id}}}:*"
    for _ in range(2):
        assert (await client.get("/api/admin/things", headers={"Authorization": f"Bearer {token}"})).status_code == 403
    assert await counted(redis, user_counter) == 0
    assert (await client.get("/api/things/a", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    assert await counted(redis, user_counter) == 1


async def test_revoked_tokens_over_the_address_limit_are_429(upstream, redis, balancer_over, key_prefix, revocations):
    prefix = f"{key_prefix}-{uuid.uuid4().hex[:8]}"  # counters of this test's own
    limiter = RedisRateLimiter(redis=redis, key_prefix=prefix)
    forwarder = forwarder_to(upstream.url, balancer_over=balancer_over)
    await forwarder.start()
    check = caller_check(redis=redis, limiter=limiter, key_prefix=key_prefix)
    app = gateway_app(forwarder=forwarder, hit=limiter.hit, check=check, key_prefix=key_prefix, default_limit=2)
    token, principal = signed_in()
    await revocations.revoke(user_id=principal.user_id, at=time.time())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            answers = [
                await client.get("/api/things/a", headers={"Authorization": f"Bearer {token}"}) for _ in range(3)
            ]
    finally:
        await forwarder.close()
    assert [a.status_code for a in answers] == [401, 401, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1


async def test_a_signed_in_request_costs_one_redis_round_trip(
    upstream, counted_redis, balancer_over, key_prefix, revocations
):
    redis, trips = counted_redis
    limiter = RedisRateLimiter(redis=redis, key_prefix=key_prefix)
    forwarder = forwarder_to(upstream.url, balancer_over=balancer_over)
    await forwarder.start()
    app = gateway_app(
        forwarder=forwarder,
        hit=limiter.hit,
        check=caller_check(redis=redis, limiter=limiter, key_prefix=key_prefix),
        key_prefix=key_prefix,
    )
    token, _ = signed_in()
    revoked_token, revoked = signed_in()
    await revocations.revoke(user_id=revoked.user_id, at=time.time())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:

            async def trips_for(path: str, token: str, status: int) -> int:
                before = trips.count
                response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == status
                return trips.count - before

            # The first call of each script may load it (NOSCRIPT, SCRIPT LOAD, EVALSHA).
            await trips_for("/api/things/a", token, 200)
            await trips_for("/api/things/a", "forged", 401)
            assert await trips_for("/api/things/a", token, 200) == 1
            assert await trips_for("/api/things/a", revoked_token, 401) == 1
            assert await trips_for("/api/admin/things", token, 403) == 1
            assert await trips_for("/api/things/a", "forged", 401) == 1  # the address's count alone
    finally:
        await forwarder.close()


async def counted(redis: Redis, pattern: str) -> int:
    """The hits counted under the counters matching ``pattern`` (both windows)."""
    keys = [key async for key in redis.scan_iter(match=pattern)]
    return sum(int(value or 0) for value in await redis.mget(keys)) if keys else 0
