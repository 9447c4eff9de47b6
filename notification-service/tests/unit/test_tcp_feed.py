"""The TCP feed over real loopback sockets, with tokens checked by a fake, revocations
heard by a fake watch and notifications from the in-memory fan-out. (From the real
fan-out, with real revocations: tests/integration/test_live.py.)"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest

from devstack.testing import eventually
from interchange_common.actors import SignedInUser
from notification_service.domain.live_push import SHUTTING_DOWN
from notification_service.entrypoints.signin import Rejected
from notification_service.entrypoints.tcp_feed import TcpFeed

from .conftest import FakeRevocations, InMemoryFanout

USERS = {
    "ada-token": SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 3600),
    "bob-token": SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 3600),
    "eve-token": SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 3600),
}


async def authenticate(token: str) -> SignedInUser:
    if token == "ada-fresh-token":  # ada's, issued after any revocation a test makes
        ada = USERS["ada-token"]
        return SignedInUser(user_id=ada.user_id, roles=ada.roles, expires_at=ada.expires_at, issued_at=time.time() + 60)
    if token == "short-token":
        return SignedInUser(user_id=uuid.uuid4(), roles=frozenset(), expires_at=time.time() + 0.3)
    if token not in USERS:
        raise Rejected("unknown token")
    return USERS[token]


class Terminal:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, line: bytes | dict[str, Any]) -> None:
        self.writer.write(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n")
        await self.writer.drain()

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            return orjson.loads(await self.reader.readline())

    async def receive_type(self, kind: str) -> dict[str, Any]:
        while (message := await self.receive())["type"] != kind:
            pass
        return message

    async def closed(self) -> bool:
        async with asyncio.timeout(5):
            while await self.reader.readline():
                pass
        return True


Connect = Callable[..., Awaitable[Terminal]]  # an optional token in, a welcomed terminal out


@pytest.fixture
async def feed(revocations: FakeRevocations, fanout: InMemoryFanout) -> AsyncIterator[TcpFeed]:
    feed = TcpFeed(authenticate=authenticate, hub=fanout, revocations=revocations, max_line_bytes=4096, queue_size=64)
    await feed.start(host="127.0.0.1", port=0)
    yield feed
    await feed.close()


@pytest.fixture
def connect(feed: TcpFeed) -> Iterator[Connect]:
    opened: list[asyncio.StreamWriter] = []

    async def open_terminal(token: str | None = None) -> Terminal:
        reader, writer = await asyncio.open_connection("127.0.0.1", feed.port, limit=2**22)
        terminal = Terminal(reader, writer)
        opened.append(writer)
        assert (await terminal.receive())["type"] == "welcome"
        if token:
            await terminal.send({"type": "auth", "token": token})
            assert (await terminal.receive())["type"] == "authenticated"
        return terminal

    yield open_terminal
    for writer in opened:
        writer.close()


async def test_a_client_is_welcomed_and_echoed(connect):
    terminal = await connect()
    await terminal.send({"type": "hello", "n": 1})
    echo = await terminal.receive()
    assert (echo["type"], echo["originalMessage"]) == ("echo", {"type": "hello", "n": 1})


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'"a string"\n', b"{\n"])
async def test_a_malformed_line_gets_an_error_and_the_connection_stays(connect, line):
    terminal = await connect()
    await terminal.send(line)
    assert (await terminal.receive())["type"] == "error"
    await terminal.send({"still": "here"})
    assert (await terminal.receive())["type"] == "echo"


async def test_only_authenticated_clients_relay_and_receive_relays(connect):
    ada, bob, stranger = await connect("ada-token"), await connect("bob-token"), await connect()
    await stranger.send({"text": "from nobody"})
    assert (await stranger.receive())["type"] == "echo"
    await ada.send({"text": "hi all"})
    assert (await ada.receive())["type"] == "echo"
    relayed = await bob.receive()
    assert relayed == {"type": "broadcast", "from": str(USERS["ada-token"].user_id), "message": {"text": "hi all"}}
    await stranger.send({"marker": 1})
    assert (await stranger.receive())["originalMessage"] == {"marker": 1}  # nothing relayed came before


async def test_a_bad_token_is_refused_and_the_client_stays_anonymous(connect):
    terminal = await connect()
    await terminal.send({"type": "auth", "token": "forged"})
    assert (await terminal.receive())["type"] == "error"
    await terminal.send({"type": "auth"})
    assert (await terminal.receive())["type"] == "error"


async def test_a_client_that_does_not_read_is_dropped_and_stalls_nobody(feed, connect):
    sender, reader = await connect("ada-token"), await connect("bob-token")
    sleeper = await connect("eve-token")  # never reads
    count, payload = 8000, {"blob": "x" * 3000}  # about 24 MB: more than socket buffers hold

    async def read_all() -> int:
        received = 0
        while received < count:
            if (await reader.receive())["type"] == "broadcast":
                received += 1
        return received

    reading = asyncio.create_task(read_all())
    for _ in range(count):  # a client that reads its echoes, as a well-behaved one does
        await sender.send(payload)
        assert (await sender.receive())["type"] == "echo"
    assert await reading == count  # every relay arrived while the sleeper slept
    assert feed.clients == 2  # the sleeper was cut off
    assert await sleeper.closed()


async def test_a_line_over_the_limit_gets_an_error_and_the_connection_closes(connect):
    terminal = await connect()
    await terminal.send(b"{" + b" " * 5000 + b"}\n")
    assert (await terminal.receive())["type"] == "error"
    assert await terminal.closed()


async def test_the_connection_ends_when_the_token_expires(connect):
    terminal = await connect("short-token")
    assert (await terminal.receive_type("error"))["detail"] == "the token expired"
    assert await terminal.closed()


async def test_closing_the_feed_closes_every_connection(feed, connect):
    terminals = [await connect(), await connect("ada-token")]
    await feed.close()
    for terminal in terminals:
        assert await terminal.closed()


ADA = USERS["ada-token"].user_id


async def test_a_revoked_token_gets_an_error_line_then_the_connection_closes(feed, connect, revocations):
    ada, bob = await connect("ada-token"), await connect("bob-token")
    assert revocations.revoke(user_id=ADA, at=time.time()) == 1
    assert await ada.receive() == {"type": "error", "detail": "token revoked"}
    assert await ada.closed()
    assert feed.clients == 1
    await bob.send({"text": "anyone?"})
    assert (await bob.receive())["type"] == "echo"
    await bob.send({"marker": 1})
    assert (await bob.receive())["originalMessage"] == {"marker": 1}  # bob is not affected


async def test_a_token_revoked_before_it_signs_in_ends_the_connection_at_once(connect, revocations):
    revocations.marks[ADA] = time.time()  # the mark is there, its announcement long gone
    terminal = await connect()
    await terminal.send({"type": "auth", "token": "ada-token"})
    assert await terminal.receive() == {"type": "error", "detail": "token revoked"}
    assert await terminal.closed()


async def test_a_fresh_token_outlives_a_revocation_before_it_and_signing_in_again_drops_the_old_watch(
    connect, revocations
):
    renewed = await connect("ada-token")
    await renewed.send({"type": "auth", "token": "ada-fresh-token"})
    assert (await renewed.receive())["type"] == "authenticated"
    old = await connect("ada-token")
    assert len(revocations.connections) == 2  # renewed's first watch ended with its new sign-in
    assert revocations.revoke(user_id=ADA, at=time.time()) == 1
    assert await old.receive() == {"type": "error", "detail": "token revoked"}
    await renewed.send({"still": "here"})
    assert (await renewed.receive())["type"] == "echo"


async def test_a_client_that_leaves_is_no_longer_watched(connect, revocations):
    terminal = await connect("ada-token")
    assert revocations.connections.users() == {ADA}
    terminal.writer.close()

    async def unwatched() -> bool:
        return not revocations.connections.users()

    await eventually(unwatched, timeout=5, interval=0.01, what="the feed to let go of the watch")


async def test_a_signed_in_client_gets_its_users_notifications_as_lines(
    connect: Connect, fanout: InMemoryFanout
) -> None:
    ada, bob = await connect("ada-token"), await connect("bob-token")
    fanout.push(user_id=ADA, payload=b'{"id":"n1","type":"order.placed"}')
    assert await ada.receive() == {"type": "notification", "notification": {"id": "n1", "type": "order.placed"}}
    await bob.send({"marker": 1})
    assert (await bob.receive())["originalMessage"] == {"marker": 1}  # nothing of ada's came before


async def test_signing_in_again_follows_the_new_user_only(connect: Connect, fanout: InMemoryFanout) -> None:
    terminal = await connect("ada-token")
    await terminal.send({"type": "auth", "token": "bob-token"})
    assert (await terminal.receive())["type"] == "authenticated"
    assert [subscription.user_id for subscription in fanout.subscriptions] == [USERS["bob-token"].user_id]
    fanout.push(user_id=ADA, payload=b'{"id":"n1"}')
    fanout.push(user_id=USERS["bob-token"].user_id, payload=b'{"id":"n2"}')
    assert await terminal.receive() == {"type": "notification", "notification": {"id": "n2"}}


async def test_an_anonymous_client_follows_nobody(connect: Connect, fanout: InMemoryFanout) -> None:
    await connect()
    assert fanout.subscriptions == []


async def test_without_redis_a_client_is_told_and_stays_signed_in_without_notifications(
    connect: Connect, fanout: InMemoryFanout
) -> None:
    fanout.down = True
    terminal = await connect()
    await terminal.send({"type": "auth", "token": "ada-token"})
    assert (await terminal.receive())["type"] == "authenticated"
    assert await terminal.receive() == {
        "type": "error",
        "detail": "notifications are unavailable right now; sign in again later",
    }
    await terminal.send({"still": "here"})
    assert (await terminal.receive())["type"] == "echo"


async def test_a_client_whose_notifications_end_is_disconnected(
    feed: TcpFeed, connect: Connect, fanout: InMemoryFanout
) -> None:
    terminal = await connect("ada-token")
    [subscription] = fanout.subscriptions
    subscription.drop(reason=SHUTTING_DOWN)
    assert await terminal.closed()
    assert feed.clients == 0


async def test_a_client_that_leaves_lets_go_of_its_notifications(connect: Connect, fanout: InMemoryFanout) -> None:
    terminal = await connect("ada-token")
    assert len(fanout.subscriptions) == 1
    terminal.writer.close()

    async def let_go() -> bool:
        return not fanout.subscriptions

    await eventually(let_go, timeout=5, interval=0.01, what="the feed to close the subscription")
