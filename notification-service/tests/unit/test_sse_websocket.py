"""SSE and WebSocket (entrypoints.sse_websocket) served in this process by the real HTTP
app, over the in-memory fan-out and a fake revocation watch: each ASGI call is driven
by hand, so a client can read one message at a time, stay silent, or hang up. The same
routes across real instances and Redis: tests/integration/test_live.py.

"Nothing else arrived" is proven without sleeping, as there: a ping's pong comes first
only if nothing was queued before it."""

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Message

from devstack.testing import eventually
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier
from notification_service.adapters.errors import LiveUnavailable
from notification_service.domain.live_push import SHUTTING_DOWN
from notification_service.domain.usecases import DeadLetters, Notifications
from notification_service.entrypoints.http import create_http_app
from notification_service.entrypoints.sse_websocket import LiveLimits

from .conftest import FakeRevocations, InMemoryFanout

SECRET = "notification-service-unit-secret-" + "u" * 24
ADA, BOB, EVE = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
TIMEOUT = 5.0


def actor_headers(
    user_id: uuid.UUID,
    *,
    expires_in: float = 3600.0,
    issued_at: float | None = None,
    token: bool = True,
    last_event_id: str | None = None,
) -> dict[str, str]:
    now = time.time()
    headers = {
        "x-actor-id": str(user_id),
        "x-actor-roles": "user",
        # Whole seconds, rounded up: at least ``expires_in`` left, however late in a second.
        "x-actor-expires": str(math.ceil(now + expires_in)),
        "x-actor-issued-at": str(int(now if issued_at is None else issued_at)),
    }
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    if token:
        issuer = ServiceTokenIssuer(service="gateway", secret=SECRET, ttl_seconds=300)
        headers["authorization"] = issuer.authorization_for(audience="notification-service")
    return headers


def scope_of(kind: str, path: str, headers: dict[str, str], query: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8003),
        "subprotocols": [],
    }


class EventStreamCall:
    """GET /internal/events: the response as the app sends it; ``hang_up`` is the client leaving."""

    def __init__(self, app: FastAPI, headers: dict[str, str], query: str = "") -> None:
        self._sent: asyncio.Queue[Message] = asyncio.Queue()
        self._asked = False
        self._gone = asyncio.Event()
        self.served = asyncio.ensure_future(
            app(scope_of("http", "/internal/events", headers, query), self._receive, self._send)
        )

    async def _receive(self) -> Message:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        await self._sent.put(message)

    async def _next(self) -> Message:
        async with asyncio.timeout(TIMEOUT):
            return await self._sent.get()

    async def start(self) -> tuple[int, dict[str, str]]:
        message = await self._next()
        assert message["type"] == "http.response.start", message
        return message["status"], {name.decode(): value.decode() for name, value in message["headers"]}

    async def chunk(self) -> bytes | None:
        """The next piece of the body; None once it has ended."""
        message = await self._next()
        assert message["type"] == "http.response.body", message
        if not message.get("more_body", False):
            assert message.get("body", b"") == b""
            return None
        body: bytes = message["body"]
        return body

    async def problem(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers = await self.start()
        body = b""
        while (message := await self._next()).get("more_body", False):
            body += message["body"]
        return status, headers, orjson.loads(body + message.get("body", b""))

    async def opened(self) -> None:
        status, headers = await self.start()
        assert (status, headers["content-type"]) == (200, "text/event-stream")
        assert await self.chunk() == b"retry: 2000\n\n"

    async def ended(self) -> bool:
        """Reads to the end of the body (keepalives and all)."""
        while await self.chunk() is not None:
            pass
        async with asyncio.timeout(TIMEOUT):
            await self.served
        return True

    def hang_up(self) -> None:
        self._gone.set()


class SocketCall:
    """A WebSocket to /internal/ws: frames both ways, and how it closed. With ``buffered``
    the app's sends wait once that many frames are unread (a client that does not read)."""

    def __init__(self, app: FastAPI, headers: dict[str, str], *, buffered: int = 0) -> None:
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue(maxsize=buffered)
        self._to_app.put_nowait({"type": "websocket.connect"})
        self.served = asyncio.ensure_future(
            app(scope_of("websocket", "/internal/ws", headers), self._to_app.get, self._from_app.put)
        )

    async def _next(self) -> Message:
        async with asyncio.timeout(TIMEOUT):
            return await self._from_app.get()

    async def accepted(self) -> None:
        assert (await self._next())["type"] == "websocket.accept"

    async def opened(self) -> dict[str, Any]:
        """Accepted and welcomed: the welcome."""
        await self.accepted()
        welcome = await self.receive()
        assert welcome["type"] == "welcome"
        return welcome

    def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        self._to_app.put_nowait({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        message = await self._next()
        assert message["type"] == "websocket.send", message
        frame: dict[str, Any] = orjson.loads(message["text"])
        return frame

    async def stalled(self) -> bool:
        """The app's next send waits (``buffered`` frames are unread)."""
        return self._from_app.full()

    async def nothing_queued(self) -> bool:
        self.send({"type": "ping"})
        return await self.receive() == {"type": "pong"}

    async def closed(self, *, heard: list[dict[str, Any]] | None = None) -> tuple[int, str]:
        """Skips what comes before the close frame (into ``heard`` if given); the code and
        reason, once the call is over."""
        while (message := await self._next())["type"] != "websocket.close":
            assert message["type"] == "websocket.send", message
            if heard is not None:
                heard.append(orjson.loads(message["text"]))
        async with asyncio.timeout(TIMEOUT):
            await self.served
        return message["code"], message.get("reason", "")

    def hang_up(self) -> None:
        self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})


@pytest.fixture
def make_app(
    notifications: Notifications, dead_letters: DeadLetters, fanout: InMemoryFanout, revocations: FakeRevocations
) -> Callable[..., FastAPI]:
    def make(**limits: Any) -> FastAPI:
        return create_http_app(
            notifications=notifications,
            dead_letters=dead_letters,
            verifier=ServiceTokenVerifier(service="notification-service", secret=SECRET),
            health_checks=lambda: [],
            max_body_bytes=65536,
            hub=fanout,
            revocations=revocations,
            live_limits=LiveLimits(**limits),
        )

    return make


@pytest.fixture
async def calls() -> AsyncIterator[list[asyncio.Future[None]]]:
    """The calls a test opened: each is ended when the test is over."""
    opened: list[asyncio.Future[None]] = []
    yield opened
    for served in opened:
        served.cancel()
    await asyncio.gather(*opened, return_exceptions=True)


@pytest.fixture
def open_stream(make_app: Callable[..., FastAPI], calls: list[asyncio.Future[None]]) -> Callable[..., EventStreamCall]:
    def open_call(headers: dict[str, str], *, query: str = "", **limits: Any) -> EventStreamCall:
        call = EventStreamCall(make_app(**limits), headers, query)
        calls.append(call.served)
        return call

    return open_call


@pytest.fixture
def open_socket(make_app: Callable[..., FastAPI], calls: list[asyncio.Future[None]]) -> Callable[..., SocketCall]:
    def open_call(headers: dict[str, str], *, buffered: int = 0, **limits: Any) -> SocketCall:
        call = SocketCall(make_app(**limits), headers, buffered=buffered)
        calls.append(call.served)
        return call

    return open_call


def note(n: int) -> bytes:
    return orjson.dumps({"id": f"n{n}", "type": "order.placed"})


def event(stream_id: str, n: int) -> bytes:
    return b"id: %s\nevent: notification\ndata: %s\n\n" % (stream_id.encode(), note(n))


def released(fanout: InMemoryFanout, revocations: FakeRevocations) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        leases = [fanout.held(kind=kind, user_id=user) for kind, user in fanout.leases]
        return not fanout.subscriptions and not any(leases) and len(revocations.connections) == 0

    return probe


# Server-Sent Events ------------------------------------------------------------------


async def test_a_stream_resumes_after_the_last_event_id_then_goes_on_live(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout
) -> None:
    for n in (1, 2, 3):
        fanout.push(user_id=ADA, payload=note(n))
    fanout.push(user_id=BOB, payload=note(9))
    call = open_stream(actor_headers(ADA, last_event_id="1-0"))
    await call.opened()
    assert [await call.chunk(), await call.chunk()] == [event("2-0", 2), event("3-0", 3)]
    fanout.push(user_id=ADA, payload=note(4))
    assert await call.chunk() == event("4-0", 4)


async def test_the_header_wins_over_the_query_and_without_either_only_new_events_come(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout
) -> None:
    for n in (1, 2, 3):
        fanout.push(user_id=ADA, payload=note(n))
    resumed = open_stream(actor_headers(ADA, last_event_id="2-0"), query="last_event_id=1-0")
    await resumed.opened()
    assert await resumed.chunk() == event("3-0", 3)
    by_query = open_stream(actor_headers(ADA), query="last_event_id=2-0")
    await by_query.opened()
    assert await by_query.chunk() == event("3-0", 3)
    fresh = open_stream(actor_headers(ADA))
    await fresh.opened()
    fanout.push(user_id=ADA, payload=note(4))
    assert await fresh.chunk() == event("4-0", 4)


async def test_a_quiet_stream_sends_a_keepalive_each_heartbeat(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout
) -> None:
    call = open_stream(actor_headers(ADA), heartbeat_seconds=0.05)
    await call.opened()
    assert await call.chunk() == b": keepalive\n\n"
    fanout.push(user_id=ADA, payload=note(1))
    while (chunk := await call.chunk()) == b": keepalive\n\n":
        pass
    assert chunk == event("1-0", 1)
    assert await call.chunk() == b": keepalive\n\n"


async def test_a_stream_ends_when_its_token_is_revoked_and_lets_go_of_everything(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout, revocations: FakeRevocations
) -> None:
    call = open_stream(actor_headers(ADA, issued_at=time.time() - 10))
    await call.opened()
    assert fanout.held(kind="streams", user_id=ADA)
    assert revocations.revoke(user_id=ADA, at=time.time()) == 1
    assert await call.ended()
    await eventually(released(fanout, revocations), timeout=TIMEOUT, interval=0.01, what="the stream to let go")


async def test_a_stream_of_a_token_revoked_already_ends_at_once(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout, revocations: FakeRevocations
) -> None:
    revocations.marks[ADA] = time.time()
    fanout.push(user_id=ADA, payload=note(1))
    call = open_stream(actor_headers(ADA, issued_at=time.time() - 10, last_event_id="0-1"))
    await call.opened()
    assert await call.ended()  # not even the history it asked for
    await eventually(released(fanout, revocations), timeout=TIMEOUT, interval=0.01, what="the stream to let go")


async def test_a_stream_ends_when_its_token_expires(open_stream: Callable[..., EventStreamCall]) -> None:
    call = open_stream(actor_headers(ADA, expires_in=1.0), heartbeat_seconds=0.2)
    await call.opened()
    assert await call.ended()


async def test_a_stream_ends_when_the_service_stops_or_the_stream_cannot_be_read(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout
) -> None:
    stopping, broken = open_stream(actor_headers(ADA)), open_stream(actor_headers(BOB))
    await stopping.opened()
    await broken.opened()
    by_user = {subscription.user_id: subscription for subscription in fanout.subscriptions}
    by_user[ADA].drop(reason=SHUTTING_DOWN)
    by_user[BOB].failure = LiveUnavailable("the stream cannot be read")
    fanout.push(user_id=BOB, payload=note(1))
    assert await stopping.ended()
    assert await broken.chunk() == event("1-0", 1)
    assert await broken.ended()  # the client comes back after ``retry`` and resumes


async def test_a_client_that_leaves_frees_its_lease_subscription_and_watch(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout, revocations: FakeRevocations
) -> None:
    call = open_stream(actor_headers(ADA))
    await call.opened()
    assert (len(fanout.subscriptions), len(revocations.connections)) == (1, 1)
    call.hang_up()
    async with asyncio.timeout(TIMEOUT):
        await call.served
    assert await released(fanout, revocations)()


async def test_an_open_stream_renews_its_lease(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout
) -> None:
    fanout.lease_seconds = 0.03  # renewed every 10 ms
    await open_stream(actor_headers(ADA)).opened()

    async def renewed() -> bool:
        return fanout.acquired >= 4

    await eventually(renewed, timeout=TIMEOUT, interval=0.01, what="the lease to be renewed")


async def test_streams_over_the_cap_get_429_saying_when_the_earliest_lease_lapses(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout, revocations: FakeRevocations
) -> None:
    clock = [1000.0]
    fanout.clock = lambda: clock[0]
    first = open_stream(actor_headers(ADA), max_streams_per_user=2)
    await first.opened()
    clock[0] += 20.0
    second = open_stream(actor_headers(ADA), max_streams_per_user=2)
    await second.opened()
    clock[0] += 5.5
    status, headers, problem = await open_stream(actor_headers(ADA), max_streams_per_user=2).problem()
    assert status == 429
    assert (headers["retry-after"], headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("35", "2", "0")
    assert headers["ratelimit-reset"] == "35"  # the first lease: 60 s from 1000, at 1025.5
    assert problem["detail"] == "at most 2 event streams per user"
    assert len(fanout.subscriptions) == 2
    assert len(revocations.connections) == 2
    other = open_stream(actor_headers(BOB), max_streams_per_user=2)
    await other.opened()  # the cap is per user
    first.hang_up()
    async with asyncio.timeout(TIMEOUT):
        await first.served
    again = open_stream(actor_headers(ADA), max_streams_per_user=2)
    await again.opened()  # a stream that ends frees its slot at once


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        (actor_headers(ADA, token=False), "", 401),
        (actor_headers(ADA, expires_in=-5), "", 401),
        ({**actor_headers(ADA), "x-actor-id": "not-a-user"}, "", 401),
        (actor_headers(ADA, last_event_id="yesterday"), "", 422),
        (actor_headers(ADA), "last_event_id=1-2-3", 422),
    ],
)
async def test_refused_streams_are_problems_and_hold_nothing(
    open_stream: Callable[..., EventStreamCall],
    fanout: InMemoryFanout,
    revocations: FakeRevocations,
    headers: dict[str, str],
    query: str,
    status: int,
) -> None:
    answered, _, problem = await open_stream(headers, query=query).problem()
    assert (answered, problem["status"]) == (status, status)
    assert await released(fanout, revocations)()
    assert fanout.acquired == 0


async def test_without_redis_a_stream_is_refused_with_503(
    open_stream: Callable[..., EventStreamCall], fanout: InMemoryFanout
) -> None:
    fanout.down = True
    status, _, problem = await open_stream(actor_headers(ADA)).problem()
    assert (status, problem["detail"]) == (503, "live push is unavailable right now")


# WebSockets --------------------------------------------------------------------------


async def test_a_socket_is_welcomed_and_answers_pings(open_socket: Callable[..., SocketCall]) -> None:
    ada = open_socket(actor_headers(ADA))
    welcome = await ada.opened()
    assert welcome["user"] == {"id": str(ADA), "roles": ["user"]}
    assert welcome["clientId"]
    assert await ada.nothing_queued()


async def test_room_members_hear_joins_messages_and_leaves_and_nobody_else_does(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout
) -> None:
    ada, bob, eve = open_socket(actor_headers(ADA)), open_socket(actor_headers(BOB)), open_socket(actor_headers(EVE))
    ada_id, bob_id = (await ada.opened())["clientId"], (await bob.opened())["clientId"]
    await eve.opened()
    ada.send({"type": "join_room", "room": "lobby"})
    assert await ada.receive() == {"type": "user_joined", "room": "lobby", "userId": str(ADA), "clientId": ada_id}
    bob.send({"type": "join_room", "room": "lobby"})
    joined = {"type": "user_joined", "room": "lobby", "userId": str(BOB), "clientId": bob_id}
    assert (await bob.receive(), await ada.receive()) == (joined, joined)

    ada.send({"type": "room_message", "room": "lobby", "message": "hi"})
    for member in (ada, bob):
        said = await member.receive()
        assert (said["type"], said["from"], said["clientId"], said["message"]) == (
            "room_message",
            str(ADA),
            ada_id,
            "hi",
        )
    assert await eve.nothing_queued()

    bob.send({"type": "leave_room", "room": "lobby"})
    left = {"type": "user_left", "room": "lobby", "userId": str(BOB), "clientId": bob_id}
    assert (await bob.receive(), await ada.receive()) == (left, left)
    ada.send({"type": "room_message", "room": "lobby", "message": "still here?"})
    assert (await ada.receive())["message"] == "still here?"
    assert await bob.nothing_queued()
    bob.send({"type": "room_message", "room": "lobby", "message": "back door"})
    assert await bob.receive() == {"type": "error", "detail": "not in room lobby"}
    assert [frame["type"] for frame in fanout.published] == [
        "user_joined",
        "user_joined",
        "room_message",
        "user_left",
        "room_message",
    ]


async def test_a_socket_that_goes_leaves_its_rooms_and_lets_go_of_everything(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout, revocations: FakeRevocations
) -> None:
    ada, bob = open_socket(actor_headers(ADA)), open_socket(actor_headers(BOB))
    ada_id = (await ada.opened())["clientId"]
    await bob.opened()
    for member in (ada, bob):
        member.send({"type": "join_room", "room": "lobby"})
        await member.receive()
    await ada.receive()  # bob's join
    ada.hang_up()
    async with asyncio.timeout(TIMEOUT):
        await ada.served
    assert await bob.receive() == {"type": "user_left", "room": "lobby", "userId": str(ADA), "clientId": ada_id}
    assert fanout.held(kind="sockets", user_id=ADA) == set()
    assert [subscription.user_id for subscription in fanout.subscriptions] == [BOB]
    assert revocations.connections.users() == {BOB}


async def test_a_private_message_reaches_every_other_socket_of_its_target_only(
    open_socket: Callable[..., SocketCall],
) -> None:
    phone, laptop, bob = (
        open_socket(actor_headers(ADA)),
        open_socket(actor_headers(ADA)),
        open_socket(actor_headers(BOB)),
    )
    for call in (phone, laptop, bob):
        await call.opened()
    bob.send({"type": "private_message", "targetUserId": str(ADA), "message": "psst"})
    for target in (phone, laptop):
        said = await target.receive()
        assert (said["type"], said["from"], said["message"]) == ("private_message", str(BOB), "psst")
    assert await bob.nothing_queued()
    phone.send({"type": "private_message", "targetUserId": str(ADA), "message": "note to self"})
    assert (await laptop.receive())["message"] == "note to self"
    assert await phone.nothing_queued()


async def test_a_socket_hears_its_users_notifications_only(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout
) -> None:
    ada, bob = open_socket(actor_headers(ADA)), open_socket(actor_headers(BOB))
    await ada.opened()
    await bob.opened()
    fanout.push(user_id=ADA, payload=note(1))
    assert await ada.receive() == {"type": "notification", "notification": orjson.loads(note(1))}
    assert await bob.nothing_queued()


async def test_bad_messages_get_an_error_and_the_socket_stays(open_socket: Callable[..., SocketCall]) -> None:
    ada = open_socket(actor_headers(ADA))
    await ada.opened()
    for bad in ("not json", {"type": "dance"}, {"type": "join_room", "room": "no spaces"}):
        ada.send(bad)
        assert (await ada.receive())["type"] == "error"
    assert await ada.nothing_queued()


async def test_rooms_per_socket_and_sockets_per_user_are_capped(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout
) -> None:
    ada = open_socket(actor_headers(ADA), max_rooms=1, max_sockets_per_user=1)
    await ada.opened()
    ada.send({"type": "join_room", "room": "one"})
    assert (await ada.receive())["type"] == "user_joined"
    ada.send({"type": "join_room", "room": "one"})
    assert await ada.receive() == {"type": "error", "detail": "already in room one"}
    ada.send({"type": "join_room", "room": "two"})
    assert await ada.receive() == {"type": "error", "detail": "too many rooms: a connection may be in at most 1"}
    second = open_socket(actor_headers(ADA), max_sockets_per_user=1)
    await second.accepted()
    assert await second.closed() == (1008, "too many connections")
    assert await ada.nothing_queued()
    assert len(fanout.held(kind="sockets", user_id=ADA)) == 1


async def test_a_message_over_the_cap_closes_with_1009(open_socket: Callable[..., SocketCall]) -> None:
    ada = open_socket(actor_headers(ADA), max_message_bytes=64)
    await ada.opened()
    ada.send({"type": "ping", "pad": "x" * 64})
    assert await ada.closed() == (1009, "message too big")


async def test_an_idle_socket_closes_with_1000(open_socket: Callable[..., SocketCall]) -> None:
    ada = open_socket(actor_headers(ADA), idle_seconds=0.1)
    await ada.opened()
    assert await ada.closed() == (1000, "idle")


async def test_a_socket_closes_with_1008_when_its_token_expires(open_socket: Callable[..., SocketCall]) -> None:
    ada = open_socket(actor_headers(ADA, expires_in=1.0))
    await ada.opened()
    assert await ada.closed() == (1008, "token expired")


async def test_a_socket_without_a_service_token_is_closed_with_1008(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout
) -> None:
    stranger = open_socket(actor_headers(ADA, token=False))
    await stranger.accepted()
    assert await stranger.closed() == (1008, "service token required")
    assert fanout.acquired == 0


async def test_a_socket_closes_1013_when_it_falls_behind_and_1012_when_the_service_stops(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout
) -> None:
    slow, stopping = open_socket(actor_headers(ADA)), open_socket(actor_headers(BOB))
    await slow.opened()
    await stopping.opened()
    for n in range(100):  # more than its queue holds, before it can take any
        fanout.push(user_id=ADA, payload=note(n))
    assert await slow.closed() == (1013, "too slow")
    [bobs] = fanout.subscriptions
    bobs.drop(reason=SHUTTING_DOWN)
    assert await stopping.closed() == (1012, "server shutting down")


async def test_a_burst_goes_out_in_order_and_a_socket_stuck_in_a_send_is_still_dropped(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout
) -> None:
    """The writer sends what came in a burst before it waits again, taking each item off
    the subscription's queue only as it sends it: a socket stuck in a send mid-burst
    still fills its queue and closes 1013, never buffering more than its queue holds."""
    reader, stuck = open_socket(actor_headers(ADA)), open_socket(actor_headers(BOB), buffered=3)
    await reader.opened()
    await stuck.opened()
    for n in range(10):
        fanout.push(user_id=ADA, payload=note(n))
        fanout.push(user_id=BOB, payload=note(n))
    for n in range(10):
        assert await reader.receive() == {"type": "notification", "notification": orjson.loads(note(n))}
    assert await reader.nothing_queued()
    await eventually(stuck.stalled, timeout=TIMEOUT, what="the stuck socket's sends to wait")
    # n0-n2 unread by the client, n3 in the writer's hand: n4-n9 still queued, so 58 more
    # fill the queue (64, InMemoryFanout's default) and the next one drops the socket.
    [bobs] = [subscription for subscription in fanout.subscriptions if subscription.user_id == BOB]
    for n in range(10, 10 + 58):
        fanout.push(user_id=BOB, payload=note(n))
    assert not bobs.ended.is_set()
    fanout.push(user_id=BOB, payload=note(68))
    assert bobs.end_reason == "too slow"
    heard: list[dict[str, Any]] = []
    assert await stuck.closed(heard=heard) == (1013, "too slow")
    # What the client buffered and, as its reads free room, the one in hand; none of
    # what was queued when it was dropped.
    assert [frame["notification"]["id"] for frame in heard] in (["n0", "n1", "n2"], ["n0", "n1", "n2", "n3"])


async def test_without_redis_a_socket_closes_1011_and_a_failed_publish_is_answered_with_an_error(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout
) -> None:
    ada = open_socket(actor_headers(ADA))
    await ada.opened()
    fanout.down = True
    ada.send({"type": "join_room", "room": "lobby"})
    assert await ada.receive() == {"type": "error", "detail": "live push is unavailable right now; try again"}
    ada.send({"type": "room_message", "room": "lobby", "message": "hi"})
    assert await ada.receive() == {"type": "error", "detail": "not in room lobby"}  # the failed join was undone
    late = open_socket(actor_headers(BOB))
    await late.accepted()
    assert await late.closed() == (1011, "live push unavailable")


async def test_a_revoked_socket_closes_1008_and_a_join_read_as_it_is_revoked_is_not_acted_on(
    open_socket: Callable[..., SocketCall], fanout: InMemoryFanout, revocations: FakeRevocations
) -> None:
    ada = open_socket(actor_headers(ADA, issued_at=100.0))
    await ada.opened()
    # The revocation is heard, and in the same instant the client's join arrives: the
    # reader wakes before the socket's watchers have closed it.
    assert revocations.revoke(user_id=ADA, at=150.0) == 1
    ada.send({"type": "join_room", "room": "lobby"})
    assert await ada.closed() == (1008, "token revoked")
    assert fanout.published == []
    assert await released(fanout, revocations)()
