"""The revocation marks outlive Redis: restored from user-service's list when the
sentinel is missing (a restart empties Redis), an event's later mark kept; and while
Redis does not answer, this instance's copy refuses revoked tokens and passes others.
Against a private Redis the tests stop and start, and the shared one; user-service's
list is a stand-in (its own tests cover the real one; tests/fault the whole path)."""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from devstack.testing import eventually, free_port
from gateway.adapters.ratelimiter import RedisCallerCheck, RedisRateLimiter
from gateway.adapters.revocations import RevocationHandler, RevocationKeeper, RevocationList, UserServiceRevocations
from gateway.adapters.upstream import UpstreamClient
from gateway.domain.errors import RevocationsUnavailable
from gateway.domain.model import Principal, RateLimitPolicy, Upstream
from gateway.domain.revocations import RevocationMarks
from interchange_common.messaging import Delivery
from interchange_common.revocations import RedisRevocations, Revocation
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier

pytestmark = pytest.mark.integration
TTL = 600
POLICY = RateLimitPolicy("rk-user", 100, 60)
IP_POLICY = RateLimitPolicy("rk-ip", 50, 60)


class Listed:
    """user-service's list, as the keeper sees it; ``down``: it does not answer."""

    def __init__(self) -> None:
        self.marks: dict[uuid.UUID, float] = {}
        self.asked: list[datetime | None] = []
        self.down = False

    def add(self, user_id: uuid.UUID, at: float) -> None:
        self.marks[user_id] = at

    async def fetch(self, *, since: datetime | None) -> RevocationList:
        self.asked.append(since)
        if self.down:
            raise RevocationsUnavailable("user-service did not answer")
        return RevocationList(
            marks=[
                Revocation(user_id=user_id, at=at)
                for user_id, at in self.marks.items()
                if since is None or at >= since.timestamp()
            ],
            as_of=datetime.now(UTC),
        )


@pytest.fixture
async def client(private_redis) -> AsyncIterator[Redis]:
    """No retries: a stopped server fails a call at once, and the first call after a
    restart may fail on a connection of the old one (the next check tries again)."""
    client = Redis.from_url(
        private_redis.url, socket_connect_timeout=0.3, socket_timeout=0.3, retry=Retry(NoBackoff(), 0)
    )
    yield client
    await client.aclose()


def principal(user_id: uuid.UUID, *, issued_at: float) -> Principal:
    return Principal(user_id=user_id, roles=frozenset({"user"}), expires_at=issued_at + TTL, issued_at=issued_at)


async def checked(keeper: RevocationKeeper) -> bool:
    """One check, and whether it left Redis with every mark (a check may meet a
    connection of the server that went away: the next one gets a new connection)."""
    await keeper.check()
    return keeper.restored


async def test_a_restarted_redis_gets_every_mark_back_and_a_mark_written_meanwhile_stays(private_redis, client):
    revocations = RedisRevocations(redis=client, key_prefix="ic-it-keep", ttl_seconds=TTL)
    now = time.time()
    suspended, demoted, long_ago = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    listed = Listed()
    listed.add(suspended, now - 60)
    listed.add(demoted, now - 30)
    listed.add(long_ago, now - TTL - 1)  # every token it refused has expired
    marks = RevocationMarks(ttl_seconds=TTL)
    keeper = RevocationKeeper(revocations=revocations, marks=marks, source=listed, refresh_seconds=3600)

    await keeper.check()  # start-up
    assert await revocations.loaded()
    assert marks.loaded
    assert await revocations.revoked_since(user_id=suspended) == pytest.approx(now - 60, abs=0.001)
    assert await revocations.revoked_since(user_id=long_ago) is None
    assert TTL - 60 - 2 <= await client.ttl(revocations.mark_key(user_id=suspended)) <= TTL - 60 + 1
    await keeper.check()
    assert listed.asked == [None]  # the sentinel is there and the copy is fresh: nothing asked

    await asyncio.to_thread(private_redis.stop)
    await asyncio.to_thread(private_redis.start)  # empty, as after any restart
    # The suspended user is suspended again (a later mark) before the keeper looks.
    again = now + 5
    handler = RevocationHandler(revocations=revocations, marks=marks)
    event = {
        "type": "user.updated",
        "occurred_at": datetime.fromtimestamp(again, UTC).isoformat(),
        "data": {"id": str(suspended), "status": "SUSPENDED"},
    }
    delivery = Delivery(message_id="m", routing_key="user.updated", body=orjson.dumps(event), headers={}, attempt=1)

    async def handled() -> bool:
        try:
            await handler(delivery)
        except RedisError:
            return False  # a connection of the old server: the consumer retries the message
        return True

    await eventually(handled, timeout=10, what="the event to be written to the new server")
    assert not await revocations.loaded()

    await eventually(lambda: checked(keeper), timeout=10, what="the marks to be restored")
    assert await revocations.loaded()
    assert await revocations.revoked_since(user_id=suspended) == pytest.approx(again, abs=0.001)
    assert await revocations.revoked_since(user_id=demoted) == pytest.approx(now - 30, abs=0.001)
    assert [since is None for since in listed.asked] == [True, True]


async def test_while_redis_does_not_answer_the_copy_refuses_revoked_tokens_and_passes_others(
    private_redis, client, caplog
):
    revocations = RedisRevocations(redis=client, key_prefix="ic-it-down", ttl_seconds=TTL)
    now = time.time()
    before, during, standing = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    listed = Listed()
    listed.add(before, now)
    marks = RevocationMarks(ttl_seconds=TTL)
    keeper = RevocationKeeper(revocations=revocations, marks=marks, source=listed, refresh_seconds=3600)
    limiter = RedisRateLimiter(redis=client, key_prefix="ic-it-down", on_failure="open")
    callers = RedisCallerCheck(redis=client, limiter=limiter, revocations=revocations, marks=marks)

    async def standing_of(user_id: uuid.UUID):
        return await callers.standing(
            principal=principal(user_id, issued_at=now - 10),
            policy=POLICY,
            key=f"user:{user_id}",
            ip_policy=IP_POLICY,
            client="ip:one",
        )

    await keeper.check()
    await asyncio.to_thread(private_redis.stop)
    # Revoked meanwhile: the event went to another instance, which could not write it
    # to Redis; user-service has it.
    listed.add(during, now + 1)
    await keeper.check()  # Redis silent: the copy is brought up to date at once
    assert listed.asked[-1] is not None  # only what is new since the last list
    with caplog.at_level(logging.WARNING):
        refused = [await standing_of(user_id) for user_id in (before, during)]
        passed = await standing_of(standing)
    assert [(s.revoked, s.decision is not None and s.decision.limit) for s in refused] == [(True, 50), (True, 50)]
    assert passed.revoked is False
    assert passed.decision is not None
    assert (passed.decision.allowed, passed.decision.limit) == (True, POLICY.limit)  # counted in this instance
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert "revocations unavailable, token checked against this instance's copy" in warnings
    assert "revocations unavailable, token not checked" not in warnings

    await asyncio.to_thread(private_redis.start)  # empty: both marks go back, from user-service
    await eventually(lambda: checked(keeper), timeout=10, what="the marks to be restored")
    for user_id, at in ((before, now), (during, now + 1)):
        assert await revocations.revoked_since(user_id=user_id) == pytest.approx(at, abs=0.001)


async def test_an_outage_that_lost_nothing_still_ends_with_every_mark_written_again(private_redis, client):
    """Redis went silent without restarting (here: every client paused), its sentinel
    still there: events retried past it may have gone to the dead-letter queue, so the
    marks go back all the same."""
    revocations = RedisRevocations(redis=client, key_prefix="ic-it-cut", ttl_seconds=TTL)
    listed = Listed()
    keeper = RevocationKeeper(
        revocations=revocations, marks=RevocationMarks(ttl_seconds=TTL), source=listed, refresh_seconds=3600
    )
    await keeper.check()
    restored = [keeper.restored]
    pauser = Redis.from_url(private_redis.url)
    try:
        await pauser.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        await keeper.check()  # times out: silent
        assert [*restored, keeper.restored] == [True, False]
        lost = uuid.uuid4()
        listed.add(lost, time.time())  # its event could not be written meanwhile
        await pauser.execute_command("CLIENT", "UNPAUSE")
    finally:
        await pauser.aclose()
    await eventually(lambda: checked(keeper), timeout=10, what="the marks to be written again")
    assert await revocations.revoked_since(user_id=lost) is not None


async def test_user_service_down_at_start_up_leaves_the_copy_unloaded_until_it_answers(private_redis, client):
    revocations = RedisRevocations(redis=client, key_prefix="ic-it-late", ttl_seconds=TTL)
    listed = Listed()
    listed.down = True
    marks = RevocationMarks(ttl_seconds=TTL)
    keeper = RevocationKeeper(revocations=revocations, marks=marks, source=listed, refresh_seconds=3600)
    await keeper.check()
    assert (marks.loaded, keeper.restored, await revocations.loaded()) == (False, False, False)
    listed.down = False
    await keeper.check()  # asked again at the next check, not after a long backoff
    assert (marks.loaded, keeper.restored, await revocations.loaded()) == (True, True, True)


async def test_a_restore_keeps_the_later_mark_and_its_life_and_announces_each(redis, key_prefix):
    revocations = RedisRevocations(redis=redis, key_prefix=f"{key_prefix}:rs:{uuid.uuid4()}", ttl_seconds=TTL)
    now = time.time()
    recent, older, expired = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await revocations.revoke(user_id=recent, at=now)  # an event's: kept the full TTL
    pubsub = redis.pubsub()
    await pubsub.subscribe(revocations.channel)
    try:
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        written = await revocations.restore(
            marks=[
                Revocation(user_id=recent, at=now - 500),  # older, and with 100 s left to live
                Revocation(user_id=older, at=now - 500),
                Revocation(user_id=expired, at=now - TTL - 5),
            ],
            now=now,
        )
        heard = [Revocation.parse((await pubsub.get_message(timeout=5))["data"]) for _ in range(2)]
    finally:
        await pubsub.aclose()
    assert written == 2
    assert await revocations.loaded()
    assert await revocations.revoked_since(user_id=recent) == pytest.approx(now, abs=0.001)
    assert await redis.ttl(revocations.mark_key(user_id=recent)) > TTL - 10  # not shortened to 100 s
    assert 90 <= await redis.ttl(revocations.mark_key(user_id=older)) <= 101
    assert await revocations.revoked_since(user_id=expired) is None
    assert {mark.user_id: mark.at for mark in heard} == pytest.approx({recent: now, older: now - 500}, abs=0.001)


SECRET = "integration-secret-" + "k" * 32


async def test_user_services_list_is_asked_for_with_the_gateways_service_token(serve_app, balancer_over):
    verifier = ServiceTokenVerifier(service="user-service", secret=SECRET)
    seen: list[tuple[str, str | None]] = []
    user_id = uuid.uuid4()

    async def revocations(request: web.Request) -> web.Response:
        caller = verifier.verify_authorization(header=request.headers.get("authorization"))
        seen.append((caller.service, request.query.get("since")))
        if request.query.get("since") == "2026-11-27T10:00:00+00:00":
            return web.json_response({"detail": "broken"}, status=503)
        return web.json_response(
            {
                "items": [{"user_id": str(user_id), "revoked_at": "2026-11-27T10:00:00Z"}],
                "as_of": "2026-11-27T10:00:01Z",
            }
        )

    app = web.Application()
    app.router.add_get("/internal/revocations", revocations)
    async with serve_app(app) as url:
        forwarder = UpstreamClient(
            upstreams={"users": Upstream("users", audience="user-service")}, balancers={"users": balancer_over(url)}
        )
        await forwarder.start()
        try:
            source = UserServiceRevocations(
                upstream=forwarder,
                upstream_name="users",
                audience="user-service",
                issuer=ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=60),
            )
            listed = await source.fetch(since=None)
            assert listed.marks == [Revocation(user_id=user_id, at=datetime(2026, 11, 27, 10, tzinfo=UTC).timestamp())]
            since = datetime(2026, 11, 27, 10, tzinfo=UTC)
            with pytest.raises(RevocationsUnavailable, match="503"):
                await source.fetch(since=since)
        finally:
            await forwarder.close()
    assert seen == [("gateway", None), ("gateway", "2026-11-27T10:00:00+00:00")]
    nobody = UpstreamClient(
        upstreams={"users": Upstream("users", audience="user-service")},
        balancers={"users": balancer_over(f"http://127.0.0.1:{free_port()}")},
    )
    await nobody.start()
    try:
        source = UserServiceRevocations(
            upstream=nobody,
            upstream_name="users",
            audience="user-service",
            issuer=ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=60),
        )
        with pytest.raises(RevocationsUnavailable, match="did not answer"):
            await source.fetch(since=None)
    finally:
        await nobody.close()


async def test_a_token_the_copy_refuses_costs_one_round_trip_as_any_other(counted_redis, redis, key_prefix):
    """After a restart and before the marks are back, the copy refuses: the call is
    still counted against the client's address, in the one round trip a call costs."""
    client, trips = counted_redis
    prefix = f"{key_prefix}:copy:{uuid.uuid4()}"  # removed after the session with the others
    revocations = RedisRevocations(redis=client, key_prefix=prefix, ttl_seconds=TTL)
    marks = RevocationMarks(ttl_seconds=TTL)
    callers = RedisCallerCheck(
        redis=client, limiter=RedisRateLimiter(redis=client, key_prefix=prefix), revocations=revocations, marks=marks
    )
    now = time.time()
    revoked, standing = uuid.uuid4(), uuid.uuid4()
    marks.note(user_id=revoked, at=now)  # in the copy only, as when Redis has just restarted

    async def check(user_id: uuid.UUID):
        return await callers.standing(
            principal=principal(user_id, issued_at=now - 1),
            policy=POLICY,
            key=f"user:{user_id}",
            ip_policy=IP_POLICY,
            client="ip:copy",
        )

    await check(standing)  # the first call may load the scripts
    await check(revoked)
    for user_id, was_revoked, limit in ((revoked, True, IP_POLICY.limit), (standing, False, POLICY.limit)):
        before = trips.count
        result = await check(user_id)
        assert trips.count - before == 1
        assert result.revoked is was_revoked
        assert result.decision is not None
        assert result.decision.limit == limit
