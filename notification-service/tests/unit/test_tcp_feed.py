"""The TCP feed over real loopback sockets, with tokens checked by a fake. (Notifications
reach it from the live hub: tests/integration/test_live.py.)"""

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest

from interchange_common.actors import SignedInUser
from notification_service.entrypoints.signin import Rejected
from notification_service.entrypoints.tcp_feed import TcpFeed

USERS = {
    "ada-token": SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 3600),
    "bob-token": SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 3600),
    "eve-token": SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 3600),
}


async def authenticate(token: str) -> SignedInUser:
    if token == "short-token":
        return SignedInUser(user_id=uuid.uuid4(), roles=frozenset(), expires_at=time.time() + 0.3)
    if token not in USERS:
        raise Rejected("unknown token")
    return USERS[token]


class Terminal:
    def __init__(self, reader, writer):
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


@pytest.fixture
async def feed():
    feed = TcpFeed(authenticate=authenticate, max_line_bytes=4096, queue_size=64)
    await feed.start(host="127.0.0.1", port=0)
    yield feed
    await feed.close()


@pytest.fixture
def connect(feed):
    opened = []

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
