"""Revoked tokens stay revoked when Redis, which holds the revocation marks every
instance reads, restarts empty (a private server of this test's; it keeps nothing on
disk, like the shared one and compose's) or stops answering (issue 19).

user-service keeps the marks in its database, written with the change that revokes;
the gateway writes them back into Redis once it sees Redis empty, and refuses by its
own copy of them meanwhile and while Redis does not answer. notification-service's TCP
feed reads the same marks in Redis when a client signs in."""

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import orjson
import pytest
import redis

from devstack.accounts import Account, login, register
from devstack.liveclients import Terminal
from devstack.shop import NOTIFICATION_INSTANCES, Shop, shop_on
from devstack.testing import PrivateRedis, wait_for

ROOT = Path(__file__).resolve().parents[2]
REVOKED = {"type": "error", "detail": "token revoked"}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    reason = PrivateRedis.unavailable_because()
    if reason:
        pytest.skip(reason)
    server = PrivateRedis()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def shop(infra, tmp_path_factory, redis_server) -> Iterator[Shop]:
    uses_redis = ("gateway", *NOTIFICATION_INSTANCES)
    with shop_on(
        root=ROOT,
        infra=infra,
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        purpose="fault_revoke",
        env_overrides={service: {"REDIS_URL": redis_server.url} for service in uses_redis},
    ) as opened:
        yield opened


def refused(shop: Shop, account: Account) -> bool:
    response = shop.gateway.get("/api/users/me", headers=account.headers)
    if response.status_code == 200:
        return False
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "token revoked"
    return True


def relogin(shop: Shop, account: Account, *, after: float) -> Account:
    """A new token, issued in a later whole second than ``after`` (tokens carry whole
    seconds; one from the same second as the revocation counts as revoked)."""
    wait_for(lambda: time.time() >= int(after) + 1, timeout=2, what="the next second")
    token = login(shop.gateway, email=account.email, password=account.password)
    return Account(account.id, account.email, account.password, token)


def feed_answer(shop: Shop, account: Account) -> dict[str, object]:
    """What notification-service's TCP feed says to ``account``'s token."""
    terminal = Terminal(shop.stack.port("notification-service", 9000))
    try:
        assert terminal.receive()["type"] == "welcome"
        terminal.send({"type": "auth", "token": account.token})
        return terminal.receive()
    finally:
        terminal.close()


def mark_in_redis(shop: Shop, server: PrivateRedis, account: Account) -> bool:
    prefix = shop.stack.environment("gateway")["REDIS_KEY_PREFIX"]
    client = redis.Redis.from_url(server.url)
    try:
        return bool(client.exists(f"{prefix}:revoked:{account.id}"))
    except redis.RedisError:
        return False
    finally:
        client.close()


def admin_changes(shop: Shop, account: Account, change: dict[str, object]) -> float:
    answer = shop.gateway.patch(f"/api/users/{account.id}", json=change, headers=shop.admin.headers)
    assert answer.status_code == 200, answer.text
    return time.time()


def test_revoked_tokens_stay_revoked_after_redis_restarts_empty(shop, redis_server):
    ann, bob, cy = register(shop.gateway), register(shop.gateway), register(shop.gateway)
    admin_changes(shop, ann, {"status": "SUSPENDED"})
    promoted_at = admin_changes(shop, bob, {"roles": ["admin", "user"]})
    for account in (ann, bob):
        wait_for(partial(refused, shop, account), timeout=30, what="the old token to be refused")
    assert feed_answer(shop, ann) == {"type": "error", "detail": "not authenticated: token revoked"}

    canary = redis.Redis.from_url(redis_server.url)
    try:
        canary.set("canary", "1")
        redis_server.stop()
        redis_server.start()
        assert canary.get("canary") is None  # it came back empty
    finally:
        canary.close()
    # The gateway refuses them at once, by its own copy of the marks …
    assert refused(shop, ann)
    assert refused(shop, bob)
    # … and writes every mark back into Redis, where notification-service reads them.
    wait_for(lambda: mark_in_redis(shop, redis_server, ann), timeout=30, what="the marks to be back in Redis")
    wait_for(
        lambda: feed_answer(shop, ann) == {"type": "error", "detail": "not authenticated: token revoked"},
        timeout=30,
        what="the TCP feed to refuse the suspended user's old token",
    )
    assert refused(shop, ann)
    assert refused(shop, bob)

    assert not refused(shop, cy)  # never revoked: unaffected
    assert feed_answer(shop, cy) == {"type": "authenticated", "userId": cy.id}
    bob_again = relogin(shop, bob, after=promoted_at)
    assert not refused(shop, bob_again)
    assert shop.gateway.get("/api/users", headers=bob_again.headers).status_code == 200  # an admin's token now
    reactivated_at = admin_changes(shop, ann, {"status": "ACTIVE"})
    ann_again = relogin(shop, ann, after=reactivated_at)
    assert not refused(shop, ann_again)
    assert refused(shop, ann)  # the old one stays dead


def test_while_redis_does_not_answer_revoked_tokens_are_refused_and_others_pass(shop, redis_server):
    dee, eve, fay = register(shop.gateway), register(shop.gateway), register(shop.gateway)
    admin_changes(shop, dee, {"status": "SUSPENDED"})
    wait_for(lambda: refused(shop, dee), timeout=30, what="the suspended user's token to be refused")

    redis_server.stop()
    terminal = Terminal(shop.stack.port("notification-service", 9000))
    try:
        assert refused(shop, dee)
        assert not refused(shop, fay)  # rate-limited in the gateway's memory meanwhile, not refused
        # The TCP feed cannot check a sign-in without Redis; whatever it answers now, a
        # revoked token does not keep the connection once Redis is back (below).
        assert terminal.receive()["type"] == "welcome"
        terminal.send({"type": "auth", "token": dee.token})
        signed_in = terminal.receive()
        # Revoked while Redis is down: user-service keeps the mark, the gateway hears of
        # it (the event, or its next look at user-service's list) and refuses the token.
        suspended_at = admin_changes(shop, eve, {"status": "SUSPENDED"})
        wait_for(lambda: refused(shop, eve), timeout=30, what="a token revoked during the outage to be refused")
        assert not refused(shop, fay)
    finally:
        redis_server.start()

    try:
        if signed_in == {"type": "authenticated", "userId": dee.id}:
            terminal.socket.settimeout(60)  # the feed subscribes again after a backoff of up to 10 s
            heard = []
            while line := terminal.lines.readline():
                heard.append(orjson.loads(line))
            assert heard[-1:] == [REVOKED], heard
        else:
            assert signed_in == {"type": "error", "detail": "not authenticated: token revoked"}
    finally:
        terminal.close()
    # Back (empty): every mark, the one made during the outage too, is in Redis again.
    for account in (dee, eve):
        wait_for(
            partial(mark_in_redis, shop, redis_server, account),
            timeout=30,
            what="the marks to be back in Redis",
        )
    assert refused(shop, eve)
    assert not refused(shop, fay)
    admin_changes(shop, eve, {"status": "ACTIVE"})
    assert not refused(shop, relogin(shop, eve, after=suspended_at))
