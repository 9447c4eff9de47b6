"""One WebSocket's end when its token is revoked, with a fake socket and a fake hub: it
closes 1008 "token revoked", and a message it reads as the revocation lands is not
acted on (no room hears a revoked token). Real sockets on real instances:
tests/integration/test_live.py."""

import asyncio
import time
import uuid
from typing import cast

import orjson

from interchange_common.actors import SignedInUser
from notification_service.adapters.live import CLOSED, LiveHub, Subscription
from notification_service.domain.live import BEFORE_ALL
from notification_service.entrypoints.live import LiveLimits, LiveSocket

ADA = SignedInUser(user_id=uuid.uuid4(), roles=frozenset({"user"}), expires_at=time.time() + 600, issued_at=100.0)


class FakeHub:
    """What a LiveSocket asks of the hub; room traffic is recorded, not sent."""

    lease_seconds = 60.0

    def __init__(self):
        self.published = []
        self.subscription = None

    async def acquire_connection(self, **_):
        return True

    async def release_connection(self, **_):
        return None

    async def subscribe(self, *, user_id, client_id, after, private=False):
        self.subscription = Subscription(
            hub=cast(LiveHub, self),
            user_id=user_id,
            client_id=client_id,
            cursor=BEFORE_ALL,
            queue_size=16,
            private=private,
        )
        return self.subscription

    async def history(self, *, user_id, after):
        return []

    def drop(self, subscription, *, reason):
        subscription.end(reason)

    def unsubscribe(self, subscription):
        subscription.end(CLOSED)

    def enter_room(self, subscription, room):
        return None

    def exit_room(self, subscription, room):
        return None

    async def publish_room(self, *, room, source, frame, skip_source):
        self.published.append(frame)


class FakeWebSocket:
    """Its first message arrives only when ``arrives`` is set; ``sent`` and ``closed`` record."""

    def __init__(self, message):
        self.message = message
        self.arrives = asyncio.Event()
        self.sent = []
        self.welcomed = asyncio.Event()
        self.closed = None

    async def accept(self):
        return None

    async def receive(self):
        await self.arrives.wait()
        self.arrives.clear()
        return {"type": "websocket.receive", "text": self.message}

    async def send_text(self, data):
        self.sent.append(orjson.loads(data))
        self.welcomed.set()

    async def close(self, *, code, reason):
        self.closed = (code, reason)


async def test_a_revoked_socket_closes_1008_and_a_join_read_as_it_is_revoked_is_not_acted_on(revocations):
    hub = FakeHub()
    websocket = FakeWebSocket(orjson.dumps({"type": "join_room", "room": "lobby"}).decode())
    socket = LiveSocket(
        websocket=websocket,  # type: ignore[arg-type]
        user=ADA,
        hub=cast(LiveHub, hub),
        revocations=revocations,
        limits=LiveLimits(),
        clock=time.time,
    )
    serving = asyncio.create_task(socket.serve())
    async with asyncio.timeout(5):
        await websocket.welcomed.wait()
    # The revocation is heard, and in the same instant the client's join arrives: the
    # reader wakes before the socket's watchers have closed it.
    assert revocations.revoke(user_id=ADA.user_id, at=150.0) == 1
    websocket.arrives.set()
    async with asyncio.timeout(5):
        await serving
    assert websocket.closed == (1008, "token revoked")
    assert hub.published == []
    assert [frame["type"] for frame in websocket.sent] == ["welcome"]
    assert len(revocations.connections) == 0
