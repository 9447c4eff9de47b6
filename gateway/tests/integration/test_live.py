"""Tickets, SSE and WebSocket pass-through, served by Hypercorn on a real socket, with
real Redis tickets and a stand-in notification-service behind a refusing instance."""

import asyncio
import hashlib
import time
import uuid

import aiohttp
import httpx
import pytest

from devstack.testing import eventually, free_port
from gateway.adapters.ratelimiter import RedisCallerCheck, RedisRateLimiter
from gateway.adapters.tickets import RedisTicketStore
from gateway.adapters.upstream import SocketClosed, SocketGone, SocketText, UpstreamClient
from gateway.domain.errors import AuthenticationFailed, UpstreamUnavailable
from gateway.domain.model import Principal, RateDecision, RateLimitPolicy, Upstream
from gateway.entrypoints.http import LiveSetup, create_app
from gateway.entrypoints.passthrough import LiveConnections
from gateway.entrypoints.server import Listeners, serve_http
from interchange_common.revocations import RedisRevocations
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier

pytestmark = pytest.mark.integration
SECRET = "live-test-secret-" + "z" * 32
ALLOWED_ORIGIN = "https://app.example.com"
USER = Principal(uuid.uuid4(), frozenset({"user"}), expires_at=time.time() + 3600, issued_at=int(time.time()) - 60)
# Revoked when the gateway starts (its mark is later than the token's issue time).
REVOKED = Principal(uuid.uuid4(), frozenset({"user"}), expires_at=time.time() + 3600, issued_at=int(time.time()) - 60)
TOKENS = {"user-token": USER, "revoked-token": REVOKED}


async def verify(*, header):
    token = (header or "").removeprefix("Bearer ")
    if token not in TOKENS:
        raise AuthenticationFailed("invalid token")
    return TOKENS[token]


class Gateway:
    def __init__(self, *, url, instances, tickets, connections):
        self.url = url
        self.ws_url = url.replace("http://", "ws://")
        self.instances = instances
        self.tickets = tickets
        self.connections = connections


@pytest.fixture(scope="module")
async def gateway(notifications, redis, key_prefix, balancer_over):
    dead = f"http://127.0.0.1:{free_port()}"
    # The refusing instance first: the very first call meets it.
    instances = balancer_over(dead, notifications.url)
    client = UpstreamClient(
        upstreams={"notifications": Upstream("notifications", audience="notification-service", timeout_seconds=2)},
        balancers={"notifications": instances},
        live_read_timeout_seconds=30,
    )
    await client.start()
    tickets = RedisTicketStore(redis=redis, key_prefix=key_prefix, ttl_seconds=30)
    connections = LiveConnections()
    revocations = RedisRevocations(redis=redis, key_prefix=key_prefix)
    await revocations.revoke(user_id=REVOKED.user_id, at=time.time())
    callers = RedisCallerCheck(
        redis=redis, limiter=RedisRateLimiter(redis=redis, key_prefix=key_prefix), revocations=revocations
    )
    app = create_app(
        routes=(),
        policies={"default": RateLimitPolicy(f"live-{key_prefix}", 1000, 60)},
        upstream=client,
        verify=verify,
        hit=_always_allowed,
        check=callers.standing,
        issuer=ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=300),
        health_checks=lambda: [],
        cors_origins=[],
        max_body_bytes=1024,
        live=LiveSetup(
            upstream_name="notifications",
            tickets=tickets,
            allowed_origins=[ALLOWED_ORIGIN],
            connections=connections,
        ),
    )
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.ensure_future(
        serve_http(
            app=app,
            listeners=Listeners(host="127.0.0.1", http_port=port, https_port=0),
            grace_seconds=2,
            on_shutdown=connections.end_all,
            stop=stop,
        )
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as probe:

        async def answers():
            if server.done():
                server.result()  # it stopped: say why
            try:
                return (await probe.get(f"{url}/health/live")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(answers, timeout=10, what="the gateway to listen")
    yield Gateway(url=url, instances=instances, tickets=tickets, connections=connections)
    stop.set()
    await asyncio.wait_for(server, timeout=10)
    await client.close()


async def _always_allowed(*, policy, key):
    return RateDecision(allowed=True, limit=policy.limit, remaining=policy.limit, reset_seconds=1)


@pytest.fixture
async def http(gateway):
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


async def new_ticket(http):
    response = await http.post("/api/auth/ticket", headers={"Authorization": "Bearer user-token"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == 30
    assert response.headers["cache-control"] == "no-store"
    return body["ticket"]


# Tickets


async def test_a_ticket_is_stored_hashed_for_its_lifetime_and_redeems_once(gateway, http, redis, key_prefix):
    ticket = await new_ticket(http)
    key = f"{key_prefix}:ticket:{hashlib.sha256(ticket.encode()).hexdigest()}"
    assert 0 < await redis.ttl(key) <= 30
    assert [k async for k in redis.scan_iter(match=f"*{ticket}*")] == []
    principal = await gateway.tickets.redeem(ticket=ticket)
    assert principal.user_id == USER.user_id
    assert principal.roles == USER.roles
    assert principal.expires_at == pytest.approx(USER.expires_at)
    assert principal.issued_at == USER.issued_at
    with pytest.raises(AuthenticationFailed):
        await gateway.tickets.redeem(ticket=ticket)


async def test_a_ticket_needs_an_access_token(http):
    for headers in ({}, {"Authorization": "Bearer forged"}):
        response = await http.post("/api/auth/ticket", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


async def test_a_revoked_token_gets_no_ticket(http):
    response = await http.post("/api/auth/ticket", headers={"Authorization": "Bearer revoked-token"})
    assert response.status_code == 401
    assert response.json()["detail"] == "token revoked"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_an_expired_ticket_is_refused(gateway, http, redis, key_prefix):
    short = RedisTicketStore(redis=redis, key_prefix=key_prefix, ttl_seconds=1)
    ticket = await short.issue(principal=USER)
    key = short.key_for(ticket=ticket)
    assert await redis.exists(key)

    async def gone():
        return not await redis.exists(key)

    await eventually(gone, timeout=5, what="the ticket to expire")
    response = await http.get("/api/events", params={"ticket": ticket})
    assert response.status_code == 401


async def test_a_ticket_whose_access_token_expired_is_refused(gateway, redis, key_prefix):
    store = RedisTicketStore(redis=redis, key_prefix=key_prefix, ttl_seconds=30)
    stale = Principal(uuid.uuid4(), frozenset({"user"}), expires_at=time.time() - 1)
    ticket = await store.issue(principal=stale)
    with pytest.raises(AuthenticationFailed, match="expired"):
        await store.redeem(ticket=ticket)


# Server-Sent Events


async def test_sse_streams_each_event_before_the_upstream_finishes(http, stand_in):
    ticket = await new_ticket(http)
    async with http.stream(
        "GET", "/api/events", params={"ticket": ticket, "last_event_id": "41"}, headers={"Last-Event-ID": "41"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        chunks = response.aiter_raw()
        first = await asyncio.wait_for(anext(chunks), timeout=10)
        assert b"id: 1" in first
        assert not stand_in.finished.is_set()
        stand_in.release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert b"id: 2" in rest
    seen = stand_in.events_requests[-1]
    assert seen.headers["Last-Event-ID"] == "41"
    assert dict(seen.query) == {"last_event_id": "41"}
    assert "ticket" not in seen.query_string
    assert seen.headers["X-Actor-Id"] == str(USER.user_id)
    assert seen.headers["X-Actor-Roles"] == "user"
    assert seen.headers["X-Actor-Expires"] == str(int(USER.expires_at))
    assert seen.headers["X-Actor-Issued-At"] == str(int(USER.issued_at))
    caller = ServiceTokenVerifier(service="notification-service", secret=SECRET).verify_authorization(
        header=seen.headers["Authorization"]
    )
    assert caller.service == "gateway"


async def test_sse_takes_an_authorization_header(http, stand_in):
    stand_in.release.set()
    response = await http.get("/api/events", headers={"Authorization": "Bearer user-token"})
    assert response.status_code == 200
    assert b"id: 2" in response.content


@pytest.mark.parametrize("how", ["none", "forged-token", "made-up-ticket", "reused-ticket"])
async def test_sse_without_a_valid_credential_is_401(http, stand_in, how):
    before = len(stand_in.events_requests)
    params, headers = {}, {}
    if how == "forged-token":
        headers = {"Authorization": "Bearer forged"}
    elif how == "revoked-token":
        headers = {"Authorization": "Bearer revoked-token"}
    elif how == "made-up-ticket":
        params = {"ticket": "x" * 43}
    elif how == "reused-ticket":
        ticket = await new_ticket(http)
        stand_in.release.set()
        assert (await http.get("/api/events", params={"ticket": ticket})).status_code == 200
        before = len(stand_in.events_requests)
        params = {"ticket": ticket}
    response = await http.get("/api/events", params=params, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert len(stand_in.events_requests) == before


async def test_an_upstream_problem_is_passed_through(http, stand_in):
    stand_in.refuse_status = 422
    response = await http.get("/api/events", headers={"Authorization": "Bearer user-token"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"] == "refused by the stand-in"


async def test_an_upstream_429_keeps_its_own_retry_after_and_limit(http, stand_in):
    # notification-service's stream cap, not the gateway's request limit (1000 here).
    cap = {"Retry-After": "42", "RateLimit-Limit": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "42"}
    stand_in.refuse_status = 429
    stand_in.refuse_headers = cap
    response = await http.get("/api/events", headers={"Authorization": "Bearer user-token"})
    assert response.status_code == 429
    assert {name: response.headers[name] for name in cap} == cap


@pytest.mark.parametrize("slash", ["%2F", "%2f"])
async def test_an_encoded_slash_is_no_separator_on_the_live_routes(http, stand_in, slash):
    before = len(stand_in.events_requests)
    stand_in.release.set()
    user = {"Authorization": "Bearer user-token"}
    assert (await http.get(f"/api{slash}events", headers=user)).status_code == 404
    assert (await http.post(f"/api{slash}auth{slash}ticket", headers=user)).status_code == 404
    assert len(stand_in.events_requests) == before


async def test_an_upstream_that_dies_mid_stream_ends_the_clients_stream(http, stand_in):
    stand_in.die_mid_stream = True
    async with http.stream("GET", "/api/events", headers={"Authorization": "Bearer user-token"}) as response:
        assert response.status_code == 200
        received = b""
        async with asyncio.timeout(10):
            async for chunk in response.aiter_raw():
                received += chunk
    assert b"id: 1" in received


# WebSocket


async def ws_connect(gateway, *, params=None, headers=None):
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(f"{gateway.ws_url}/ws", params=params, headers=headers)
    except BaseException:
        await session.close()
        raise
    return session, ws


async def closed_with(ws):
    message = await asyncio.wait_for(ws.receive(), timeout=10)
    assert message.type is aiohttp.WSMsgType.CLOSE, message
    return message.data, message.extra


async def test_websocket_relays_both_ways_and_the_client_leaving_closes_upstream(gateway, http, stand_in):
    ticket = await new_ticket(http)
    session, ws = await ws_connect(gateway, params={"ticket": ticket})
    try:
        welcome = await asyncio.wait_for(ws.receive_json(), timeout=10)
        assert welcome == {"type": "welcome", "user": str(USER.user_id)}
        await ws.send_str('{"type": "join_room", "room": "r1"}')
        echo = await asyncio.wait_for(ws.receive_json(), timeout=10)
        assert echo == {"type": "echo", "message": '{"type": "join_room", "room": "r1"}'}
        await ws.close()
    finally:
        await session.close()
    await asyncio.wait_for(stand_in.upstream_closed.wait(), timeout=10)
    assert stand_in.closed_code == 1000
    seen = stand_in.socket_requests[-1]
    assert seen.headers["X-Actor-Expires"] == str(int(USER.expires_at))
    # From the ticket: the upstream ends the socket when the token behind it is revoked.
    assert seen.headers["X-Actor-Issued-At"] == str(int(USER.issued_at))
    assert "ticket" not in seen.query_string


async def test_websocket_passes_the_upstream_close_code_and_reason(gateway, stand_in):
    session, ws = await ws_connect(gateway, headers={"Authorization": "Bearer user-token"})
    try:
        await ws.receive_json()
        await ws.send_str("close:4001:bye now")
        assert await closed_with(ws) == (4001, "bye now")
    finally:
        await session.close()


async def test_an_upstream_drop_closes_the_client_with_1012(gateway, stand_in):
    session, ws = await ws_connect(gateway, headers={"Authorization": "Bearer user-token"})
    try:
        await ws.receive_json()
        await ws.send_str("drop")
        code, _ = await closed_with(ws)
        assert code == 1012
    finally:
        await session.close()


@pytest.mark.parametrize(
    "how", ["none", "forged-token", "revoked-token", "made-up-ticket", "reused-ticket", "expired-ticket"]
)
async def test_websocket_without_a_valid_credential_is_closed_1008(gateway, http, stand_in, redis, key_prefix, how):
    params, headers = {}, {}
    if how == "forged-token":
        headers = {"Authorization": "Bearer forged"}
    elif how == "revoked-token":
        headers = {"Authorization": "Bearer revoked-token"}
    elif how == "made-up-ticket":
        params = {"ticket": "y" * 43}
    elif how == "reused-ticket":
        ticket = await new_ticket(http)
        await gateway.tickets.redeem(ticket=ticket)
        params = {"ticket": ticket}
    elif how == "expired-ticket":
        short = RedisTicketStore(redis=redis, key_prefix=key_prefix, ttl_seconds=1)
        ticket = await short.issue(principal=USER)

        async def gone():
            return not await redis.exists(short.key_for(ticket=ticket))

        await eventually(gone, timeout=5, what="the ticket to expire")
        params = {"ticket": ticket}
    before = len(stand_in.socket_requests)
    session, ws = await ws_connect(gateway, params=params, headers=headers)
    try:
        code, _ = await closed_with(ws)
        assert code == 1008
    finally:
        await session.close()
    assert len(stand_in.socket_requests) == before


async def test_an_upstream_that_refuses_the_actor_is_1008(gateway, stand_in):
    stand_in.refuse_status = 401
    session, ws = await ws_connect(gateway, headers={"Authorization": "Bearer user-token"})
    try:
        code, _ = await closed_with(ws)
        assert code == 1008
    finally:
        await session.close()


async def test_a_foreign_origin_is_refused_before_the_handshake(gateway, http, stand_in):
    ticket = await new_ticket(http)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws_connect(gateway, params={"ticket": ticket}, headers={"Origin": "https://evil.example.com"})
    assert refused.value.status == 403
    # The refused handshake did not spend the ticket.
    assert (await gateway.tickets.redeem(ticket=ticket)).user_id == USER.user_id


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "own"])
async def test_listed_and_own_origins_are_let_in(gateway, stand_in, origin):
    origin = gateway.url if origin == "own" else origin
    session, ws = await ws_connect(gateway, headers={"Authorization": "Bearer user-token", "Origin": origin})
    try:
        assert (await asyncio.wait_for(ws.receive_json(), timeout=10))["type"] == "welcome"
    finally:
        await ws.close()
        await session.close()


# Several instances


async def test_calls_pass_over_a_refusing_instance_and_eject_it(notifications, stand_in, balancer_over):
    dead = f"http://127.0.0.1:{free_port()}"
    instances = balancer_over(dead, notifications.url)
    client = UpstreamClient(
        upstreams={"n": Upstream("n", audience="notification-service", timeout_seconds=2)}, balancers={"n": instances}
    )
    await client.start()
    try:
        # The first call meets the refusing instance, and even a POST moves on (nothing
        # was sent); the refusal ejects it.
        answer = await client.forward(upstream="n", method="POST", path="/health", query="", headers={}, body=b"")
        assert answer.status == 200
        assert stand_in.health_methods[-1] == "POST"
        assert [[i.url for i in await instances.candidates()] for _ in range(2)] == [[notifications.url, dead]] * 2
        stand_in.release.set()
        stream = await client.open_stream(upstream="n", path="/internal/events", query="", headers={})
        assert stream.status == 200
        stream.close()
        opened = await client.open_socket(upstream="n", path="/internal/ws", headers={})
        assert opened.socket is not None
        await opened.socket.close()
        await client.probe(upstream="n")
    finally:
        await client.close()


async def test_an_upstream_socket_speaks_in_messages_and_one_gone_is_unavailable(stand_in, balancer_over):
    # The relay sees only these types, never aiohttp's.
    client = UpstreamClient(
        upstreams={"n": Upstream("n", audience="notification-service", timeout_seconds=2)},
        balancers={"n": balancer_over(stand_in.url)},
    )
    await client.start()
    try:
        closing = (await client.open_socket(upstream="n", path="/internal/ws", headers={"X-Actor-Id": "ada"})).socket
        assert closing is not None
        assert await closing.receive() == SocketText('{"type": "welcome", "user": "ada"}')
        await closing.send_text("close:4001:bye now")
        assert await closing.receive() == SocketClosed(code=4001, reason="bye now")
        dropping = (await client.open_socket(upstream="n", path="/internal/ws", headers={})).socket
        assert dropping is not None
        await dropping.receive()
        await dropping.send_text("drop")
        assert await dropping.receive() == SocketGone()
        assert dropping.closed
        with pytest.raises(UpstreamUnavailable):
            await dropping.send_text("anyone there?")
    finally:
        await client.close()


async def test_health_fails_only_when_no_instance_answers(balancer_over):
    client = UpstreamClient(
        upstreams={"n": Upstream("n", audience="notification-service", timeout_seconds=1)},
        balancers={"n": balancer_over(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")},
    )
    await client.start()
    try:
        with pytest.raises(UpstreamUnavailable):
            await client.probe(upstream="n")
    finally:
        await client.close()


# Last: ending every live connection, as shutting down does, leaves the gateway ending
# new ones too.


async def test_shutting_down_ends_live_connections_with_1012(gateway, http, stand_in):
    session, ws = await ws_connect(gateway, headers={"Authorization": "Bearer user-token"})
    try:
        await ws.receive_json()
        async with http.stream("GET", "/api/events", headers={"Authorization": "Bearer user-token"}) as events:
            chunks = events.aiter_raw()
            assert b"id: 1" in await asyncio.wait_for(anext(chunks), timeout=10)
            gateway.connections.end_all()
            code, _ = await closed_with(ws)
            assert code == 1012
            async with asyncio.timeout(10):
                rest = [chunk async for chunk in chunks]
            assert b"id: 2" not in b"".join(rest)
    finally:
        await session.close()
