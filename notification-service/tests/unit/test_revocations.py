"""Live connections end when their user's tokens are revoked: the registry of open
connections (pure) and the watch that feeds it from the revocations channel and the
marks (with a fake of the marks; the real channel is in tests/integration/test_live.py)."""

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from interchange_common.actors import SignedInUser
from interchange_common.revocations import Revocation
from notification_service.adapters.errors import LiveUnavailable
from notification_service.adapters.revocations import RedisRevocationWatch
from notification_service.domain.live_connections import OpenConnections

ADA, BOB = uuid.uuid4(), uuid.uuid4()


class Ended:
    def __init__(self):
        self.names = []

    def __call__(self, name):
        return lambda: self.names.append(name)


def test_a_revocation_ends_the_users_connections_opened_with_tokens_issued_at_or_before_it():
    connections, ended = OpenConnections(), Ended()
    connections.add(user_id=ADA, issued_at=100.0, end=ended("ada old"))
    connections.add(user_id=ADA, issued_at=200.0, end=ended("ada same second"))
    connections.add(user_id=ADA, issued_at=201.0, end=ended("ada new"))
    connections.add(user_id=BOB, issued_at=100.0, end=ended("bob"))

    assert connections.revoke(user_id=ADA, revoked_at=200.5) == 2
    assert sorted(ended.names) == ["ada old", "ada same second"]
    assert connections.revoke(user_id=ADA, revoked_at=200.5) == 0  # each ends once
    assert connections.users() == {ADA, BOB}
    assert len(connections) == 2


def test_a_forgotten_connection_is_not_ended_and_its_user_is_gone_with_the_last():
    connections, ended = OpenConnections(), Ended()
    forget = connections.add(user_id=ADA, issued_at=100.0, end=ended("ada"))
    forget()
    forget()  # twice is harmless
    assert connections.revoke(user_id=ADA, revoked_at=500.0) == 0
    assert ended.names == []
    assert connections.users() == frozenset()


def test_an_end_that_forgets_itself_or_others_does_not_upset_the_revocation():
    connections, ended = OpenConnections(), Ended()
    forgets: dict[str, Callable[[], None]] = {}

    def end_first():
        ended.names.append("first")
        forgets["first"]()
        forgets["second"]()  # closing one connection may end another of the same client

    forgets["first"] = connections.add(user_id=ADA, issued_at=1.0, end=end_first)
    forgets["second"] = connections.add(user_id=ADA, issued_at=1.0, end=ended("second"))
    assert connections.revoke(user_id=ADA, revoked_at=2.0) == 1
    assert ended.names == ["first"]
    assert connections.users() == frozenset()


class FakeMarks:
    """RedisRevocations' reading side, with marks set by the test; ``down`` plays Redis unreachable."""

    channel = b"p:revocations"

    def __init__(self):
        self.at = {}
        self.down = False
        self.read = asyncio.Event()
        self.hold = None  # an Event: revoked_since waits for it

    async def revoked_since(self, *, user_id):
        self.read.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            raise RedisConnectionError("down")
        return self.at.get(user_id)

    async def marks(self, *, user_ids):
        if self.down:
            raise RedisConnectionError("down")
        return [Revocation(user_id=u, at=self.at[u]) for u in user_ids if u in self.at]


def user(user_id, *, issued_at):
    return SignedInUser(user_id=user_id, roles=frozenset({"user"}), expires_at=time.time() + 600, issued_at=issued_at)


@pytest.fixture
def marks():
    return FakeMarks()


@pytest.fixture
def watch(marks):
    return RedisRevocationWatch(revocations=marks, connections=OpenConnections())


async def test_a_connection_whose_token_is_already_revoked_ends_as_it_is_watched(watch, marks):
    marks.at[ADA] = 150.0
    ended = Ended()
    await watch.watch(user=user(ADA, issued_at=100.0), end=ended("old"))
    await watch.watch(user=user(ADA, issued_at=151.0), end=ended("new"))
    assert ended.names == ["old"]


async def test_an_announcement_ends_the_watched_connections_it_revokes(watch):
    ended = Ended()
    await watch.watch(user=user(ADA, issued_at=100.0), end=ended("ada"))
    await watch.watch(user=user(BOB, issued_at=100.0), end=ended("bob"))
    watch.heard(f"{ADA} 100.000".encode())
    watch.heard(b"not a revocation")  # ignored (logged)
    watch.heard(f"{BOB} 99.000".encode())  # bob's token is newer than that
    assert ended.names == ["ada"]


async def test_an_announcement_heard_while_the_mark_is_read_ends_the_connection_once(watch, marks):
    marks.hold = asyncio.Event()
    ended = Ended()
    watching = asyncio.create_task(watch.watch(user=user(ADA, issued_at=100.0), end=ended("ada")))
    await marks.read.wait()  # registered, and reading the mark
    marks.at[ADA] = 120.0
    watch.heard(f"{ADA} 120.000".encode())
    marks.hold.set()
    await watching
    assert ended.names == ["ada"]


async def test_catching_up_ends_what_an_announcement_lost_meanwhile_would_have(watch, marks):
    ended = Ended()
    await watch.watch(user=user(ADA, issued_at=100.0), end=ended("ada"))
    await watch.watch(user=user(BOB, issued_at=100.0), end=ended("bob"))
    marks.at[ADA] = 130.0  # announced while the hub was not subscribed
    await watch.caught_up()
    assert ended.names == ["ada"]


async def test_catching_up_without_redis_fails_so_that_the_hub_tries_again(watch, marks):
    await watch.watch(user=user(ADA, issued_at=100.0), end=Ended()("ada"))
    marks.down = True
    with pytest.raises(LiveUnavailable):
        await watch.caught_up()


async def test_without_redis_a_connection_is_let_through_and_still_watched(watch, marks):
    marks.down = True
    ended = Ended()
    await watch.watch(user=user(ADA, issued_at=100.0), end=ended("ada"))
    assert ended.names == []
    watch.heard(f"{ADA} 100.000".encode())
    assert ended.names == ["ada"]


async def test_a_watch_cancelled_while_reading_the_mark_leaves_nothing_behind(marks):
    connections = OpenConnections()
    watch = RedisRevocationWatch(revocations=marks, connections=connections)
    marks.hold = asyncio.Event()
    watching = asyncio.create_task(watch.watch(user=user(ADA, issued_at=100.0), end=Ended()("ada")))
    await marks.read.wait()
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watching
    assert connections.users() == frozenset()
