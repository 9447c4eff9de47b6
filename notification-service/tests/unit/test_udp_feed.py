"""The UDP feed over real loopback datagrams, with tokens checked by a fake and
revocations heard by a fake watch."""

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest

from interchange_common.actors import SignedInUser
from notification_service.entrypoints.signin import Rejected
from notification_service.entrypoints.udp_feed import UdpFeed

USERS = {
    name: SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 3600)
    for name in ("ada", "bob", "eve")
}


async def authenticate(token: str) -> SignedInUser:
    if token == "ada-fresh":  # ada's, issued after any revocation a test makes
        ada = USERS["ada"]
        return SignedInUser(user_id=ada.user_id, roles=ada.roles, expires_at=ada.expires_at, issued_at=time.time() + 60)
    if token not in USERS:
        raise Rejected("unknown token")
    return USERS[token]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Device(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.inbox.put_nowait(orjson.loads(data))

    def send(self, message: dict[str, Any] | bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(message if isinstance(message, bytes) else orjson.dumps(message))

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(5):
            return await self.inbox.get()

    def nothing_more(self) -> bool:
        return self.inbox.empty()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def feed(clock, revocations):
    feed = UdpFeed(
        authenticate=authenticate,
        revocations=revocations,
        max_datagram_bytes=1024,
        forget_after_seconds=60,
        clock=clock,
    )
    await feed.start(host="127.0.0.1", port=0)
    yield feed
    await feed.close()


@pytest.fixture
async def device(feed):
    opened = []

    async def open_device() -> Device:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(Device, remote_addr=("127.0.0.1", feed.port))
        opened.append(protocol)
        return protocol

    yield open_device
    for protocol in opened:
        assert protocol.transport is not None
        protocol.transport.close()


async def test_ping_is_acked_and_answered_with_pong(device):
    phone = await device()
    phone.send({"type": "ping", "id": 7})
    assert await phone.receive() == {"type": "ack", "id": 7}
    assert await phone.receive() == {"type": "pong"}


@pytest.mark.parametrize("datagram", [b"not json", b"[1]", b"{", b'"x"'])
async def test_a_malformed_datagram_gets_an_error(device, datagram):
    phone = await device()
    phone.send(datagram)
    assert (await phone.receive())["type"] == "error"


async def test_an_oversized_datagram_is_refused(device):
    phone = await device()
    phone.send({"type": "ping", "pad": "x" * 2000})
    assert (await phone.receive())["detail"].startswith("a datagram is at most")


async def test_broadcasts_go_to_the_other_authenticated_clients_only(device):
    ada, bob, anonymous = await device(), await device(), await device()
    for phone, token in ((ada, "ada"), (bob, "bob")):
        phone.send({"type": "ping", "token": token})
        assert (await phone.receive())["type"] == "ack"
        assert (await phone.receive())["type"] == "pong"
    anonymous.send({"type": "ping"})
    await anonymous.receive()
    await anonymous.receive()
    ada.send({"type": "broadcast", "data": {"temp": 21}, "token": "ada"})
    assert (await ada.receive())["type"] == "ack"
    assert await bob.receive() == {"type": "broadcast", "from": str(USERS["ada"].user_id), "data": {"temp": 21}}
    anonymous.send({"type": "ping"})
    assert (await anonymous.receive())["type"] == "ack"  # no broadcast came before it
    assert ada.nothing_more()


async def test_an_unauthenticated_broadcast_is_refused(device):
    eve, bob = await device(), await device()
    bob.send({"type": "ping", "token": "bob"})
    await bob.receive()
    await bob.receive()
    eve.send({"type": "broadcast", "data": "spam"})
    assert (await eve.receive())["type"] == "ack"
    assert (await eve.receive())["type"] == "error"
    eve.send({"type": "broadcast", "data": "spam", "token": "forged"})
    assert (await eve.receive())["type"] == "error"
    bob.send({"type": "ping"})
    assert (await bob.receive())["type"] == "ack"  # nothing relayed to bob


async def test_clients_silent_for_a_minute_are_forgotten(feed, device, clock):
    ada, bob = await device(), await device()
    bob.send({"type": "ping", "token": "bob"})
    await bob.receive()
    await bob.receive()
    assert feed.peers() == 1
    clock.now += 61
    ada.send({"type": "broadcast", "data": "anyone?", "token": "ada"})
    assert (await ada.receive())["type"] == "ack"
    assert feed.peers() == 1  # only ada: bob went quiet
    bob.send({"type": "ping"})
    assert (await bob.receive())["type"] == "ack"  # the broadcast never reached bob


async def signed_in(phone: Device, token: str) -> None:
    phone.send({"type": "ping", "token": token})
    assert (await phone.receive())["type"] == "ack"
    assert (await phone.receive())["type"] == "pong"


async def test_a_revoked_peer_is_told_and_forgotten_until_it_signs_in_with_a_fresh_token(feed, device, revocations):
    ada, bob, eve = await device(), await device(), await device()
    for phone, token in ((ada, "ada"), (bob, "bob"), (eve, "eve")):
        await signed_in(phone, token)
    assert revocations.revoke(user_id=USERS["ada"].user_id, at=time.time()) == 1
    assert await ada.receive() == {"type": "error", "detail": "token revoked"}
    assert feed.peers() == 2

    bob.send({"type": "broadcast", "data": "to all", "token": "bob"})
    assert (await bob.receive())["type"] == "ack"
    assert (await eve.receive())["data"] == "to all"  # sent to eve, and to ada if she still counted
    ada.send({"type": "broadcast", "data": "still here"})  # no token: her old sign-in is gone
    assert (await ada.receive())["type"] == "ack"  # nothing relayed came before it
    assert await ada.receive() == {"type": "error", "detail": "broadcasting needs a valid token"}
    eve.send({"type": "ping"})
    assert (await eve.receive())["type"] == "ack"  # ada's broadcast never reached eve

    await signed_in(ada, "ada-fresh")
    bob.send({"type": "broadcast", "data": "welcome back", "token": "bob"})
    assert (await ada.receive())["data"] == "welcome back"


async def test_a_peer_forgotten_for_silence_is_no_longer_watched(feed, device, clock, revocations):
    ada = await device()
    await signed_in(ada, "ada")
    assert len(revocations.connections) == 1
    clock.now += 61
    assert feed.peers() == 0
    assert len(revocations.connections) == 0
