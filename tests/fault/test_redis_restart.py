"""Redis, which carries the live fan-out between notification instances and keeps
the event streams' history, restarts (a private server of this test's; it keeps
nothing on disk, like the shared one). A notification made while Redis was down
reaches the user's stream once it is back, and pub/sub fan-out resumes by itself."""

from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from devstack.accounts import register
from devstack.liveclients import Chat, Follower
from devstack.runner import healthy
from devstack.shop import NOTIFICATION_INSTANCES, Shop, shop_on
from devstack.testing import PrivateRedis, wait_for

ROOT = Path(__file__).resolve().parents[2]


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
        purpose="fault_redis",
        env_overrides={service: {"REDIS_URL": redis_server.url} for service in uses_redis},
    ) as opened:
        yield opened


def test_live_push_survives_a_redis_restart(shop, redis_server):
    me, friend = register(shop.gateway), register(shop.gateway)
    follower = Follower(shop.gateway, me)
    try:
        first = shop.place(me).json()["id"]
        assert follower.orders(1) == [first]

        redis_server.stop()
        during = shop.place(me).json()["id"]
        wait_for(
            lambda: any(n["data"].get("order_id") == during for n in shop.notifications(me)),
            timeout=30,
            what="the notification made while Redis is down to be stored",
        )
        redis_server.start()
        after = shop.place(me).json()["id"]
        got = follower.orders(2)
        assert Counter(got) == Counter([during, after]), got
    finally:
        follower.close()

    # Room messages are not kept: a member hears the ones sent after its instance
    # subscribed again, which it does by itself (after a backoff of up to 10 s).
    # Each instance's /health says so once it is subscribed.
    for instance in NOTIFICATION_INSTANCES:
        health = partial(healthy, f"{shop.stack.url(instance, 8003)}/health")
        wait_for(health, timeout=60, what=f"{instance} to subscribe to Redis again")
    gateway = shop.stack.url("gateway", 8080)
    with Chat(gateway, account=me) as mine, Chat(gateway, account=friend) as theirs:
        for chat in (mine, theirs):
            chat.receive_type("welcome")
            chat.send({"type": "join_room", "room": "after-restart"})
            chat.receive_type("user_joined")
        mine.send({"type": "room_message", "room": "after-restart", "message": "back"})
        heard = theirs.receive_type("room_message")
        assert (heard["from"], heard["message"]) == (me.id, "back")
