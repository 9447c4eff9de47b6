"""Live push across instances: real Redis, PostgreSQL and RabbitMQ, real sockets.

Instances run in this process, each as bootstrap builds it (its own Redis connections,
its own pub/sub subscriber) and served by uvicorn on a free port. Clients are real:
httpx for SSE, the websockets library for WebSockets, asyncio streams for TCP.

"Nothing else arrived" is proven without sleeping: the client sends a ping, and the
pong comes first only if nothing was queued before it. The witness that the message
in question was already dispatched on that instance is another socket there that got it.
"""

import asyncio
import base64
import contextlib
import math
import os
import signal
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from devstack.testing import assert_problem, eventually, free_port
from interchange_common.actors import SignedInUser
from interchange_common.revocations import RedisRevocations
from interchange_common.servicejwt import ServiceTokenIssuer
from interchange_common.tasks import cancel_and_wait
from notification_service.adapters.pusher import LivePushDispatcher
from notification_service.adapters.redis_fanout import LiveHub
from notification_service.adapters.revocations import RedisRevocationWatch
from notification_service.adapters.store import SqlNotificationStore
from notification_service.bootstrap import build, redis_commands, redis_subscriber
from notification_service.config import Settings
from notification_service.domain.live_connections import OpenConnections
from notification_service.domain.live_push import LiveNotification, StreamId, parse_stream_id
from notification_service.domain.model import Notification
from notification_service.entrypoints.schemas import NotificationPublic
from notification_service.entrypoints.signin import Rejected
from notification_service.entrypoints.tcp_feed import TcpFeed
from notification_service.entrypoints.udp_feed import UdpFeed

from .conftest import SECRET

pytestmark = pytest.mark.integration

TIMEOUT = 15.0


def service_token(caller="gateway"):
    return ServiceTokenIssuer(service=caller, secret=SECRET, ttl_seconds=300).token_for(audience="notification-service")


def live_headers(user_id, *, roles="user", expires_in=3600.0, issued_at=None, token=True):
    now = time.time()
    headers = {
        "x-actor-id": str(user_id),
        "x-actor-roles": roles,
        # Whole seconds, rounded up: at least ``expires_in`` left, however late in a second.
        "x-actor-expires": str(math.ceil(now + expires_in)),
        "x-actor-issued-at": str(int(now if issued_at is None else issued_at)),
    }
    if token:
        headers["authorization"] = f"Bearer {service_token()}"
    return headers


class Instance:
    """One notification-service instance: its container and its HTTP server."""

    def __init__(self, container, server, port):
        self.container = container
        self.server = server
        self.port = port

    @property
    def live(self):
        return self.container.live

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self):
        return f"ws://127.0.0.1:{self.port}/internal/ws"


async def _started(server: uvicorn.Server) -> bool:
    return server.started


@pytest.fixture
async def start_instance(settings_env):
    """Starts instances; ``handles_events=False`` makes one that consumes and pushes
    nothing (only its live subscriber and HTTP server run)."""
    running = []

    async def start(*, handles_events=True, **env):
        settings = Settings(**{key.lower(): value for key, value in {**settings_env, **env}.items()})
        container = build(settings=settings)
        work = container.background()
        if not handles_events:
            for name in ("events-consumer", "dead-letter-consumer", "mail-dispatcher", "live-pusher", "retention"):
                work.pop(name).close()
        tasks = [asyncio.create_task(item, name=name) for name, item in work.items()]
        port = free_port()
        config = uvicorn.Config(
            container.http_app(),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws_max_size=settings.ws_max_message_bytes,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        running.append((container, server, serving, tasks))
        await eventually(lambda: _started(server), timeout=TIMEOUT, interval=0.01, what="uvicorn to listen")
        async with asyncio.timeout(TIMEOUT):
            await container.live.ready.wait()
            if handles_events:
                await container.consumer.ready.wait()
        return Instance(container, server, port)

    yield start
    for container, server, serving, tasks in reversed(running):
        container.live.shutdown()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        await cancel_and_wait(tasks)
        await container.close()


@pytest.fixture
async def redis(infra):
    client = Redis.from_url(infra.redis_url)
    yield client
    await client.aclose()


def notification_for(user_id, *, title="Order shipped"):
    notification_id = uuid.uuid4()
    return Notification(
        id=notification_id,
        user_id=user_id,
        type="order.shipped",
        title=title,
        body="on its way",
        data={"order_id": str(uuid.uuid4())},
        event_id=uuid.uuid4(),
        created_at=datetime.now(UTC),
    )


def render(notification):
    return NotificationPublic.of(notification).model_dump_json().encode()


async def push(hub, notification):
    stream_id, added = await hub.push(
        notification_id=notification.id, user_id=notification.user_id, payload=render(notification)
    )
    assert added
    return stream_id


class Sse:
    """Reads an SSE response event by event (comments and retry lines included)."""

    def __init__(self, response):
        self.response = response
        self._lines = response.aiter_lines()

    async def block(self):
        fields: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            async for line in self._lines:
                if line == "":
                    if fields:
                        return fields
                    continue
                fields.append(line)
        raise EOFError("the stream ended")

    async def event(self):
        """The next event with data, skipping comments and the retry line."""
        while True:
            fields = await self.block()
            if any(line.startswith("data:") for line in fields):
                parsed = dict(line.split(": ", 1) for line in fields)
                return {**parsed, "data": orjson.loads(parsed["data"])}

    async def ended(self):
        async with asyncio.timeout(TIMEOUT):
            async for _ in self._lines:
                pass
        return True


@contextlib.asynccontextmanager
async def sse(instance, headers, *, params=None):
    async with (
        httpx.AsyncClient(base_url=instance.http, timeout=TIMEOUT) as client,
        client.stream("GET", "/internal/events", headers=headers, params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield Sse(response)


class Socket:
    def __init__(self, connection):
        self.connection = connection
        self.client_id = ""

    async def send(self, message):
        await self.connection.send(message if isinstance(message, str | bytes) else orjson.dumps(message).decode())

    async def receive(self):
        async with asyncio.timeout(TIMEOUT):
            return orjson.loads(await self.connection.recv())

    async def receive_type(self, kind):
        while (message := await self.receive())["type"] != kind:
            pass
        return message

    async def nothing_pending(self):
        """True when nothing was queued for this socket: a ping's pong comes first."""
        await self.send({"type": "ping"})
        message = await self.receive()
        assert message == {"type": "pong"}, message
        return True

    async def closed_with(self):
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await self.connection.recv()
        return self.connection.close_code, self.connection.close_reason


@pytest.fixture
async def open_socket():
    opened = []

    async def open_one(instance, user_id=None, *, headers=None, welcome=True):
        connection = await ws_connect(instance.ws, additional_headers=headers or live_headers(user_id), open_timeout=10)
        opened.append(connection)
        socket = Socket(connection)
        if welcome:
            greeting = await socket.receive()
            assert greeting["type"] == "welcome", greeting
            socket.client_id = greeting["clientId"]
        return socket

    yield open_one
    for connection in opened:
        await connection.close()


async def test_a_notification_handled_by_one_instance_reaches_sse_ws_and_tcp_on_another(
    start_instance, open_socket, bus, events, db, redis, key_prefix
):
    await start_instance()  # handles the event
    other = await start_instance(handles_events=False)
    user_id = uuid.uuid4()

    async def authenticate(token):
        if token != "ada":
            raise Rejected("unknown token")
        return SignedInUser(user_id=user_id, roles=frozenset({"user"}), expires_at=time.time() + 3600)

    feed = TcpFeed(authenticate=authenticate, hub=other.live)
    await feed.start(host="127.0.0.1", port=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", feed.port)
    try:

        async def line():
            async with asyncio.timeout(TIMEOUT):
                return orjson.loads(await reader.readline())

        assert (await line())["type"] == "welcome"
        writer.write(b'{"type":"auth","token":"ada"}\n')
        assert (await line())["type"] == "authenticated"
        socket = await open_socket(other, user_id)
        async with sse(other, live_headers(user_id)) as stream:
            created = events.user(user_id=user_id, name="Ada")
            await bus.send(created)

            event = await stream.event()
            notification = event["data"]
            assert (event["event"], notification["type"], notification["title"]) == (
                "notification",
                "user.created",
                "Welcome to Interchange",
            )
            by_socket = await socket.receive_type("notification")
            by_tcp = await line()
            assert by_socket == {"type": "notification", "notification": notification}
            assert by_tcp == {"type": "notification", "notification": notification}
    finally:
        writer.close()
        await feed.close()
    event_id = uuid.UUID(created.message_id)
    assert str(await db.fetchval("SELECT id FROM notifications WHERE event_id = $1", event_id)) == notification["id"]

    async def marked_pushed():  # in the transaction that the publish preceded
        return await db.fetchval("SELECT pushed_at IS NOT NULL FROM notifications WHERE event_id = $1", event_id)

    await eventually(marked_pushed, timeout=TIMEOUT, interval=0.02)
    [(stream_id, _)] = await redis.xrange(f"{key_prefix}:live:stream:{user_id}")
    assert stream_id.decode() == event["id"]


async def test_sse_resumes_after_the_last_event_id_with_no_gap_and_no_duplicate(start_instance):
    one, two = await start_instance(handles_events=False), await start_instance(handles_events=False)
    user_id = uuid.uuid4()
    pushed = [notification_for(user_id, title=f"n{n}") for n in range(8)]
    ids = [await push(one.live, notification) for notification in pushed[:5]]

    for headers, params in (({"last-event-id": str(ids[1])}, None), ({}, {"last_event_id": str(ids[1])})):
        async with sse(two, {**live_headers(user_id), **headers}, params=params) as stream:
            missed = [await stream.event() for _ in range(3)]
            assert [event["id"] for event in missed] == [str(stream_id) for stream_id in ids[2:5]]
            assert [event["data"]["title"] for event in missed] == ["n2", "n3", "n4"]
            if headers:  # then what is new, live
                ids.append(await push(one.live, pushed[len(ids)]))
                assert (await stream.event())["id"] == str(ids[-1])
    async with sse(two, live_headers(user_id)) as stream:  # no resume point: only what is new
        ids.append(await push(one.live, pushed[len(ids)]))
        ids.append(await push(one.live, pushed[len(ids)]))
        assert [(await stream.event())["id"] for _ in range(2)] == [str(ids[-2]), str(ids[-1])]


async def test_sse_resume_wins_with_the_header_over_the_query(start_instance):
    instance = await start_instance(handles_events=False)
    user_id = uuid.uuid4()
    ids = [await push(instance.live, notification_for(user_id)) for _ in range(3)]
    headers = {**live_headers(user_id), "last-event-id": str(ids[1])}
    async with sse(instance, headers, params={"last_event_id": str(ids[0])}) as stream:
        assert (await stream.event())["id"] == str(ids[2])


async def test_sse_answers_with_the_documented_headers_retry_and_heartbeats(start_instance):
    instance = await start_instance(handles_events=False, SSE_HEARTBEAT_SECONDS="0.2")
    user_id = uuid.uuid4()
    async with sse(instance, live_headers(user_id)) as stream:
        assert stream.response.headers["content-type"] == "text/event-stream"
        assert stream.response.headers["cache-control"] == "no-cache"
        assert stream.response.headers["x-accel-buffering"] == "no"
        assert await stream.block() == ["retry: 2000"]
        assert await stream.block() == [": keepalive"]
        assert await stream.block() == [": keepalive"]


async def test_sse_ends_when_the_token_expires_and_when_the_service_stops(start_instance):
    instance = await start_instance(handles_events=False, SSE_HEARTBEAT_SECONDS="60")
    user_id = uuid.uuid4()
    async with sse(instance, live_headers(user_id, expires_in=1.5)) as stream:
        assert await stream.block() == ["retry: 2000"]
        assert await stream.ended()
    async with sse(instance, live_headers(user_id)) as stream:
        assert await stream.block() == ["retry: 2000"]
        instance.live.shutdown()
        assert await stream.ended()


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"authorization": None}, 401),
        ({"authorization": "Bearer forged"}, 401),
        ({"x-actor-id": None}, 401),
        ({"x-actor-id": "me"}, 401),
        ({"x-actor-expires": None}, 401),
        ({"x-actor-expires": "soon"}, 401),
        ({"x-actor-expires": str(int(time.time()) - 5)}, 401),
        ({"x-actor-issued-at": None}, 401),
        ({"x-actor-issued-at": "earlier"}, 401),
        ({"last-event-id": "yesterday"}, 422),
        ({"last-event-id": "1700000000000"}, 422),
        ({"last-event-id": "1-2-3"}, 422),
    ],
)
async def test_sse_refusals_are_problems_before_the_stream_starts(start_instance, change, status):
    instance = await start_instance(handles_events=False)
    headers = {**live_headers(uuid.uuid4())}
    for key, value in change.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    async with httpx.AsyncClient(base_url=instance.http, timeout=TIMEOUT) as client:
        response = await client.get("/internal/events", headers=headers)
        body = assert_problem(response, status)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
        if status == 422:
            assert "event id" in body["detail"]
        bad_query = await client.get(
            "/internal/events", headers=live_headers(uuid.uuid4()), params={"last_event_id": "x"}
        )
        assert_problem(bad_query, 422)


async def test_rooms_reach_every_member_on_every_instance_and_nobody_else(start_instance, open_socket):
    one, two = await start_instance(handles_events=False), await start_instance(handles_events=False)
    ada, bob, eve, carl = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ada_socket, bob_socket = await open_socket(one, ada), await open_socket(two, bob)
    eve_socket, carl_socket = await open_socket(two, eve), await open_socket(two, carl)

    await ada_socket.send({"type": "join_room", "room": "lobby"})
    assert await ada_socket.receive() == {
        "type": "user_joined",
        "room": "lobby",
        "userId": str(ada),
        "clientId": ada_socket.client_id,
    }
    for socket, user in ((bob_socket, bob), (carl_socket, carl)):
        await socket.send({"type": "join_room", "room": "lobby"})
        joined = {"type": "user_joined", "room": "lobby", "userId": str(user), "clientId": socket.client_id}
        assert await socket.receive() == joined  # the joiner's confirmation
        assert await ada_socket.receive() == joined
        if socket is carl_socket:
            assert await bob_socket.receive() == joined

    await ada_socket.send({"type": "room_message", "room": "lobby", "message": "hello"})
    for socket in (ada_socket, bob_socket, carl_socket):
        said = await socket.receive()
        assert {key: said[key] for key in ("type", "room", "from", "clientId", "message")} == {
            "type": "room_message",
            "room": "lobby",
            "from": str(ada),
            "clientId": ada_socket.client_id,
            "message": "hello",
        }
        assert datetime.fromisoformat(said["sentAt"]).tzinfo is not None
    assert await eve_socket.nothing_pending()  # bob and carl on eve's instance had it: eve did not

    await bob_socket.send({"type": "leave_room", "room": "lobby"})
    left = {"type": "user_left", "room": "lobby", "userId": str(bob), "clientId": bob_socket.client_id}
    for socket in (bob_socket, ada_socket, carl_socket):
        assert await socket.receive() == left
    await ada_socket.send({"type": "room_message", "room": "lobby", "message": "bob is gone"})
    assert (await carl_socket.receive())["message"] == "bob is gone"
    assert (await ada_socket.receive())["message"] == "bob is gone"
    assert await bob_socket.nothing_pending()
    await bob_socket.send({"type": "room_message", "room": "lobby", "message": "still here?"})
    assert await bob_socket.receive() == {"type": "error", "detail": "not in room lobby"}

    await ada_socket.connection.close()
    assert await carl_socket.receive() == {
        "type": "user_left",
        "room": "lobby",
        "userId": str(ada),
        "clientId": ada_socket.client_id,
    }
    assert await eve_socket.nothing_pending()


async def test_a_private_message_reaches_every_socket_of_its_target_only(start_instance, open_socket):
    one, two = await start_instance(handles_events=False), await start_instance(handles_events=False)
    ada, bob, eve = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ada_socket, ada_other = await open_socket(one, ada), await open_socket(two, ada)
    bob_here, bob_there = await open_socket(one, bob), await open_socket(two, bob)
    eve_socket = await open_socket(two, eve)

    await ada_socket.send({"type": "private_message", "targetUserId": str(bob), "message": "psst"})
    for socket in (bob_here, bob_there):
        received = await socket.receive()
        assert (received["type"], received["from"], received["message"]) == ("private_message", str(ada), "psst")
        assert set(received) == {"type", "from", "message", "sentAt"}
    for socket in (ada_socket, ada_other, eve_socket):
        assert await socket.nothing_pending()


async def test_a_notification_reaches_every_websocket_of_its_user_only(start_instance, open_socket):
    one, two = await start_instance(handles_events=False), await start_instance(handles_events=False)
    ada, eve = uuid.uuid4(), uuid.uuid4()
    here, there, eve_socket = await open_socket(one, ada), await open_socket(two, ada), await open_socket(two, eve)
    notification = notification_for(ada)
    await push(one.live, notification)
    for socket in (here, there):
        received = await socket.receive()
        assert received == {"type": "notification", "notification": orjson.loads(render(notification))}
    assert await eve_socket.nothing_pending()


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        ("{not json", "each message must be one JSON object"),
        ("[1, 2]", "each message must be one JSON object"),
        ({"type": "dance"}, "unknown message type 'dance'"),
        ({"no": "type"}, 'a message needs a "type"'),
        ({"type": "join_room", "room": "no spaces"}, "room must be 1 to 64 characters of A-Z a-z 0-9 _ . -"),
        ({"type": "join_room", "room": "r" * 65}, "room must be 1 to 64 characters of A-Z a-z 0-9 _ . -"),
        ({"type": "room_message", "room": "lobby", "message": "hi"}, "not in room lobby"),
        ({"type": "leave_room", "room": "lobby"}, "not in room lobby"),
        ({"type": "room_message", "room": "lobby", "message": ""}, "message must be a non-empty string"),
        ({"type": "private_message", "targetUserId": "bob", "message": "m"}, "targetUserId must be a user id"),
    ],
)
async def test_bad_websocket_messages_get_an_error_and_the_connection_stays(
    start_instance, open_socket, message, detail
):
    instance = await start_instance(handles_events=False)
    socket = await open_socket(instance, uuid.uuid4())
    await socket.send(message)
    assert await socket.receive() == {"type": "error", "detail": detail}
    assert await socket.nothing_pending()


async def test_rooms_per_socket_are_capped_and_a_joined_room_cannot_be_joined_again(start_instance, open_socket):
    instance = await start_instance(handles_events=False, WS_MAX_ROOMS="2")
    socket = await open_socket(instance, uuid.uuid4())
    for room in ("a", "b"):
        await socket.send({"type": "join_room", "room": room})
        assert (await socket.receive())["type"] == "user_joined"
    await socket.send({"type": "join_room", "room": "a"})
    assert await socket.receive() == {"type": "error", "detail": "already in room a"}
    await socket.send({"type": "join_room", "room": "c"})
    assert await socket.receive() == {"type": "error", "detail": "too many rooms: a connection may be in at most 2"}
    await socket.send({"type": "leave_room", "room": "a"})
    assert (await socket.receive())["type"] == "user_left"
    await socket.send({"type": "join_room", "room": "c"})
    assert (await socket.receive())["room"] == "c"


async def test_a_message_over_the_size_cap_closes_with_1009(start_instance, open_socket):
    instance = await start_instance(handles_events=False, WS_MAX_MESSAGE_BYTES="512")
    socket = await open_socket(instance, uuid.uuid4())
    await socket.send({"type": "room_message", "room": "r", "message": "x" * 400})  # under the cap: answered
    assert (await socket.receive())["type"] == "error"
    await socket.send({"type": "room_message", "room": "r", "message": "x" * 600})
    code, _ = await socket.closed_with()
    assert code == 1009


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"authorization": None}, "service token required"),
        ({"x-actor-id": None}, "a live connection belongs to a signed-in user"),
        ({"x-actor-expires": None}, "X-Actor-Expires must be the token's expiry in epoch seconds"),
        ({"x-actor-expires": str(int(time.time()) - 1)}, "token expired"),
        ({"x-actor-issued-at": None}, "X-Actor-Issued-At must be the token's iat in epoch seconds"),
    ],
)
async def test_an_unauthenticated_websocket_is_closed_with_1008(start_instance, open_socket, change, reason):
    instance = await start_instance(handles_events=False)
    headers = live_headers(uuid.uuid4())
    for key, value in change.items():
        headers.pop(key)
        if value is not None:
            headers[key] = value
    socket = await open_socket(instance, headers=headers, welcome=False)
    assert await socket.closed_with() == (1008, reason)


async def test_sockets_per_user_are_counted_across_instances(start_instance, open_socket, redis, key_prefix):
    one = await start_instance(handles_events=False, WS_MAX_SOCKETS_PER_USER="2")
    two = await start_instance(handles_events=False, WS_MAX_SOCKETS_PER_USER="2")
    user_id = uuid.uuid4()
    first = await open_socket(one, user_id)
    await open_socket(two, user_id)
    refused = await open_socket(one, user_id, welcome=False)
    assert await refused.closed_with() == (1008, "too many connections")
    assert await open_socket(two, uuid.uuid4())  # another user is not affected
    await first.connection.close()

    async def released():
        return await redis.zcard(f"{key_prefix}:live:sockets:{user_id}") == 1

    await eventually(released, timeout=TIMEOUT, interval=0.02)
    assert await open_socket(two, user_id)


async def test_event_streams_per_user_are_counted_across_instances(start_instance, redis, key_prefix):
    one = await start_instance(handles_events=False, SSE_MAX_STREAMS_PER_USER="2")
    two = await start_instance(handles_events=False, SSE_MAX_STREAMS_PER_USER="2")
    user_id = uuid.uuid4()
    key = f"{key_prefix}:live:streams:{user_id}"
    async with sse(one, live_headers(user_id)), sse(two, live_headers(user_id)):
        async with httpx.AsyncClient(base_url=one.http, timeout=TIMEOUT) as client:
            refused = await client.get("/internal/events", headers=live_headers(user_id))
            assert_problem(refused, 429)
            assert refused.json()["detail"] == "at most 2 event streams per user"
        async with sse(one, live_headers(uuid.uuid4())):
            pass  # another user is not affected
        assert await redis.zcard(key) == 2

    async def released():
        return await redis.zcard(key) == 0

    await eventually(released, timeout=TIMEOUT, interval=0.02)
    async with sse(two, live_headers(user_id)):
        assert await redis.zcard(key) == 1


async def test_a_refused_stream_says_when_the_earliest_lease_lapses(start_instance, redis, key_prefix):
    instance = await start_instance(handles_events=False, SSE_MAX_STREAMS_PER_USER="2")
    user_id = uuid.uuid4()
    # A stream a crashed instance left behind, its lease running out in 7 s (a live
    # stream's runs a minute from its last renewal): the first slot to free by itself.
    await redis.zadd(f"{key_prefix}:live:streams:{user_id}", {"ghost": int(time.time() * 1000) + 7_000})
    async with (
        sse(instance, live_headers(user_id)),
        httpx.AsyncClient(base_url=instance.http, timeout=TIMEOUT) as client,
    ):
        refused = await client.get("/internal/events", headers=live_headers(user_id))
    assert_problem(refused, 429)
    assert 5 <= int(refused.headers["retry-after"]) <= 7
    assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
    assert (refused.headers["ratelimit-limit"], refused.headers["ratelimit-remaining"]) == ("2", "0")


async def test_a_crashed_instances_sockets_lapse(start_instance, open_socket, redis, key_prefix):
    instance = await start_instance(handles_events=False, WS_MAX_SOCKETS_PER_USER="1")
    user_id = uuid.uuid4()
    key = f"{key_prefix}:live:sockets:{user_id}"
    # A socket a crashed instance never released: its lease ran out a moment ago.
    await redis.zadd(key, {"ghost": int(time.time() * 1000) - 1})
    assert await open_socket(instance, user_id)
    assert await redis.zscore(key, "ghost") is None
    assert await redis.zcard(key) == 1


async def test_an_idle_socket_closes_with_1000_and_an_active_one_stays(start_instance, open_socket):
    instance = await start_instance(handles_events=False, WS_IDLE_SECONDS="1")
    idle, active = await open_socket(instance, uuid.uuid4()), await open_socket(instance, uuid.uuid4())
    closing = asyncio.create_task(idle.closed_with())
    while not closing.done():  # the active one pings, and outlives the idle one
        assert await active.nothing_pending()
        await asyncio.wait({closing}, timeout=0.3)
    assert closing.result() == (1000, "idle")
    assert await active.nothing_pending()


async def test_a_socket_closes_with_1008_when_the_token_expires(start_instance, open_socket):
    instance = await start_instance(handles_events=False)
    socket = await open_socket(instance, headers=live_headers(uuid.uuid4(), expires_in=1.5))
    assert await socket.closed_with() == (1008, "token expired")


async def test_sockets_close_with_1012_when_the_service_stops(start_instance, open_socket):
    instance = await start_instance(handles_events=False)
    sockets = [await open_socket(instance, uuid.uuid4()) for _ in range(2)]
    instance.live.shutdown()
    for socket in sockets:
        code, _ = await socket.closed_with()
        assert code == 1012


@pytest.fixture
async def make_hub(infra, key_prefix):
    clients = []

    def make(*, url=None, connect_subscriber=None, prefix=None, ping_seconds=5.0, listeners=()):
        url = url or infra.redis_url
        redis = redis_commands(url)
        clients.append(redis)
        return LiveHub(
            redis=redis,
            connect_subscriber=connect_subscriber or (lambda: redis_subscriber(url)),
            key_prefix=prefix or key_prefix,
            history_max_length=1000,
            history_max_age_seconds=3600,
            ping_seconds=ping_seconds,
            listeners=listeners,
        )

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def store(database_url):
    engine = create_async_engine(database_url, pool_size=2)
    yield SqlNotificationStore(engine=engine)
    await engine.dispose()


async def test_the_live_outbox_pushes_a_committed_notification_once_even_after_a_crash(
    database_url, db, store, make_hub, redis
):
    hub = make_hub()
    listener = redis.pubsub()
    await listener.subscribe(hub.notifications_channel)
    user_id = uuid.uuid4()
    notification = notification_for(user_id)
    # Committed, and the process died before anything was pushed.
    async with store.transaction() as inbox:
        await inbox.add_notification(notification=notification)
    assert await db.fetchval("SELECT pushed_at FROM notifications WHERE id = $1", notification.id) is None

    dispatcher = LivePushDispatcher(dsn=database_url, hub=hub, render=render, poll_seconds=3600)
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await dispatcher.push_pending(conn) == 1
        assert await db.fetchval("SELECT pushed_at FROM notifications WHERE id = $1", notification.id) is not None
        [(first_id, fields)] = await redis.xrange(hub.stream_key(user_id))
        assert orjson.loads(fields[b"n"]) == orjson.loads(render(notification))
        # A crash after Redis had it and before pushed_at committed: the row is pending again.
        await db.execute("UPDATE notifications SET pushed_at = NULL WHERE id = $1", notification.id)
        assert await dispatcher.push_pending(conn) == 1
        assert await dispatcher.push_pending(conn) == 0
    finally:
        await conn.close()
    # And the script itself, run again: the same id, nothing added.
    again = await hub.push(notification_id=notification.id, user_id=user_id, payload=render(notification))
    assert again == (parse_stream_id(first_id.decode()), False)
    assert await redis.xlen(hub.stream_key(user_id)) == 1
    # Pub/sub keeps order: everything published before the marker arrives before it.
    await redis.publish(hub.notifications_channel, b"marker")
    heard = []
    async with asyncio.timeout(TIMEOUT):
        while (data := await _published(listener)) != b"marker":
            heard.append(data.split(b" ", 2)[1])
    assert heard == [first_id]
    await listener.aclose()


async def _published(listener):
    while (message := await listener.get_message(timeout=1.0)) is None or message["type"] != "message":
        pass
    return message["data"]


async def test_the_live_pusher_is_woken_by_the_commit(database_url, db, store, make_hub, redis):
    hub = make_hub()
    # An hour between polls: only the NOTIFY at commit can make this quick.
    dispatcher = LivePushDispatcher(dsn=database_url, hub=hub, render=render, poll_seconds=3600)
    running = asyncio.create_task(dispatcher.run())
    try:
        user_id = uuid.uuid4()
        for _ in range(2):  # the first may be taken by the run's first sweep; the second by the wake-up
            async with store.transaction() as inbox:
                await inbox.add_notification(notification=notification_for(user_id))

            async def pushed_all():
                return await db.fetchval("SELECT count(*) FROM notifications WHERE pushed_at IS NULL") == 0

            await eventually(pushed_all, timeout=TIMEOUT, interval=0.02)
        assert await redis.xlen(hub.stream_key(user_id)) == 2
    finally:
        await cancel_and_wait([running])


async def test_the_subscriber_resubscribes_after_redis_restarts_and_refills_the_gap(private_redis, make_hub):
    closed_port = free_port()
    gate = asyncio.Event()
    gate.set()

    def subscriber():
        # While the gate is shut, the subscriber cannot reach Redis (but publishers can).
        return redis_subscriber(private_redis.url if gate.is_set() else f"redis://127.0.0.1:{closed_port}/0")

    publisher = make_hub(url=private_redis.url, prefix="ic-it-restart")
    hub = make_hub(url=private_redis.url, connect_subscriber=subscriber, prefix="ic-it-restart", ping_seconds=0.5)
    running = asyncio.create_task(hub.run())
    user_id = uuid.uuid4()
    try:
        await asyncio.wait_for(hub.ready.wait(), TIMEOUT)
        subscription = await hub.subscribe(user_id=user_id, client_id="sse", after=None)
        before = await push(publisher, notification_for(user_id, title="before"))
        assert await _next(subscription) == before

        gate.clear()
        await asyncio.to_thread(private_redis.stop)
        await eventually(_not_ready(hub), timeout=TIMEOUT, interval=0.02)
        await asyncio.to_thread(private_redis.start)
        # Published while the subscriber was away: only the stream has these.
        missed = [await push(publisher, notification_for(user_id, title=f"missed {n}")) for n in range(3)]
        assert not hub.ready.is_set()
        assert all(stream_id > before for stream_id in missed)

        gate.set()
        await asyncio.wait_for(hub.ready.wait(), TIMEOUT)
        assert [await _next(subscription) for _ in range(3)] == missed
        after = await push(publisher, notification_for(user_id, title="after"))
        assert await _next(subscription) == after
        hub.unsubscribe(subscription)
    finally:
        await cancel_and_wait([running])


def _not_ready(hub):
    async def probe():
        return not hub.ready.is_set()

    return probe


async def _next(subscription) -> StreamId:
    async with asyncio.timeout(TIMEOUT):
        item = await subscription.next()
    assert isinstance(item, LiveNotification)
    return item.stream_id


async def test_a_stopping_process_ends_its_streams_and_sockets_at_once(start_process):
    """SIGTERM: SSE streams end and WebSockets close with 1012 right away, not after
    the HTTP server's drain period; the process then exits cleanly. (Its sockets also
    decline the client's offer of permessage-deflate, as served: see bootstrap.serve.)"""
    stack = await asyncio.to_thread(start_process, TCP_PORT=str(free_port()), UDP_PORT=str(free_port()))
    running = stack.running[0]
    instance = Instance(container=None, server=None, port=int(running.service.environment["HTTP_PORT"]))
    user_id = uuid.uuid4()
    async with sse(instance, live_headers(user_id)) as stream:
        assert await stream.block() == ["retry: 2000"]
        async with ws_connect(instance.ws, additional_headers=live_headers(user_id)) as connection:
            socket = Socket(connection)
            assert (await socket.receive())["type"] == "welcome"
            request, response = connection.request, connection.response
            assert request is not None
            assert response is not None
            assert "permessage-deflate" in request.headers["Sec-WebSocket-Extensions"]
            assert "Sec-WebSocket-Extensions" not in response.headers
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            code, _ = await socket.closed_with()
            assert code == 1012
            assert await stream.ended()
            assert time.monotonic() - started < 5  # the drain's grace period is 10 s
    assert await asyncio.to_thread(running.process.wait, 30) == 0


async def test_a_websocket_that_does_not_read_is_dropped_and_stalls_nobody(start_instance, open_socket):
    instance = await start_instance(handles_events=False, LIVE_QUEUE_SIZE="16", WS_MAX_MESSAGE_BYTES="65536")
    sender, reader = await open_socket(instance, uuid.uuid4()), await open_socket(instance, uuid.uuid4())
    sleeper = await open_socket(instance, uuid.uuid4())  # joins, then never reads
    for socket in (sender, reader, sleeper):
        await socket.send({"type": "join_room", "room": "flood"})
        assert (await socket.receive_type("user_joined"))["clientId"] == socket.client_id
    # 30 MB that compression cannot shrink: more than the socket buffers and the queue hold.
    count, text = 500, base64.b64encode(os.urandom(45_000)).decode()

    async def read_all():
        received = 0
        while received < count:
            if (await reader.receive())["type"] == "room_message":
                received += 1
        return received

    reading = asyncio.create_task(read_all())
    for _ in range(count):  # a sender that reads its own copies, as a well-behaved client does
        await sender.send({"type": "room_message", "room": "flood", "message": text})
        assert (await sender.receive_type("room_message"))["message"] == text
    assert await reading == count  # every message arrived while the sleeper slept
    assert instance.live.subscribers == 2  # the sleeper was dropped
    code, _ = await sleeper.closed_with()
    assert code in (1013, 1006)  # 1013 "too slow" when the close frame still fits through


class Line:
    """A TCP feed client: newline-delimited JSON."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def signed_in(cls, feed, token):
        terminal = cls(*await asyncio.open_connection("127.0.0.1", feed.port))
        assert (await terminal.receive())["type"] == "welcome"
        terminal.writer.write(orjson.dumps({"type": "auth", "token": token}) + b"\n")
        assert (await terminal.receive())["type"] == "authenticated"
        return terminal

    async def receive(self):
        async with asyncio.timeout(TIMEOUT):
            line = await self.reader.readline()
        return orjson.loads(line) if line else None

    async def ended_with(self):
        """The last line before the feed closed the connection."""
        last = None
        while (line := await self.receive()) is not None:
            last = line
        return last


class Datagrams(asyncio.DatagramProtocol):
    """A UDP feed client."""

    def __init__(self):
        self.inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.inbox.put_nowait(orjson.loads(data))

    @classmethod
    async def signed_in(cls, feed, token):
        _, device = await asyncio.get_running_loop().create_datagram_endpoint(cls, remote_addr=("127.0.0.1", feed.port))
        device.send({"type": "ping", "token": token})
        assert [await device.receive(), await device.receive()] == [{"type": "ack"}, {"type": "pong"}]
        return device

    def send(self, message):
        assert self.transport is not None
        self.transport.sendto(orjson.dumps(message))

    async def receive(self):
        async with asyncio.timeout(TIMEOUT):
            return await self.inbox.get()


async def test_a_revocation_ends_the_users_live_connections_of_every_kind_on_every_instance(
    start_instance, open_socket, redis, key_prefix
):
    """The gateway's mark (SET and PUBLISH in one script) reaches both instances: the
    user's WebSockets close 1008, event streams end, TCP clients get an error line and
    EOF, UDP peers are told and forgotten. Tokens issued after it, and other users,
    keep their connections."""
    instances = [await start_instance(handles_events=False) for _ in range(2)]
    ada, bob = uuid.uuid4(), uuid.uuid4()
    issued = int(time.time()) - 60
    revoked_at = issued + 30.5
    tokens = {
        name: SignedInUser(user_id=user_id, roles=frozenset({"user"}), expires_at=time.time() + 600, issued_at=issued)
        for name, user_id in (("ada", ada), ("bob", bob))
    }

    async def authenticate(token):
        if token not in tokens:
            raise Rejected("unknown token")
        return tokens[token]

    async with contextlib.AsyncExitStack() as stack:
        sockets, streams, lines, devices, kept = [], [], [], [], []
        for instance in instances:
            watch = instance.container.revocations
            tcp = TcpFeed(authenticate=authenticate, hub=instance.live, revocations=watch)
            udp = UdpFeed(authenticate=authenticate, revocations=watch)
            for feed in (tcp, udp):
                await feed.start(host="127.0.0.1", port=0)
                stack.push_async_callback(feed.close)
            sockets.append(await open_socket(instance, headers=live_headers(ada, issued_at=issued)))
            streams.append(await stack.enter_async_context(sse(instance, live_headers(ada, issued_at=issued))))
            lines.append(await Line.signed_in(tcp, "ada"))
            stack.callback(lines[-1].writer.close)
            for token in ("ada", "bob"):
                devices.append(await Datagrams.signed_in(udp, token))
                stack.callback(devices[-1].transport.close)
            kept += [
                await open_socket(instance, headers=live_headers(ada, issued_at=revoked_at + 1)),
                await open_socket(instance, headers=live_headers(bob, issued_at=issued)),
            ]
        assert [instance.container.revocations.watched for instance in instances] == [7, 7]

        await RedisRevocations(redis=redis, key_prefix=key_prefix).revoke(user_id=ada, at=revoked_at)

        for socket in sockets:
            assert await socket.closed_with() == (1008, "token revoked")
        for stream in streams:
            assert await stream.ended()
        for line in lines:
            assert await line.ended_with() == {"type": "error", "detail": "token revoked"}
        for device in devices[::2]:  # ada's
            assert await device.receive() == {"type": "error", "detail": "token revoked"}
        for socket in kept:
            assert await socket.nothing_pending()

        async def only_the_kept_are_left():
            return [(i.container.revocations.watched, i.live.subscribers) for i in instances] == [(3, 2), (3, 2)]

        # Left on each: the two kept sockets (subscribed and watched), and bob's UDP peer.
        await eventually(only_the_kept_are_left, timeout=TIMEOUT, interval=0.02)


async def test_a_revocation_announced_while_the_subscriber_was_away_ends_the_connection_on_return(
    infra, make_hub, redis, key_prefix
):
    gate = asyncio.Event()
    gate.set()
    closed_port = free_port()
    name = f"ic-it-revocations-{uuid.uuid4().hex[:8]}"

    def subscriber():
        if not gate.is_set():
            return redis_subscriber(f"redis://127.0.0.1:{closed_port}/0")
        # As bootstrap's, with a name to find it by: no retries, so a cut ends the session.
        return Redis.from_url(infra.redis_url, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0), client_name=name)

    marks = RedisRevocations(redis=redis, key_prefix=key_prefix)
    connections = OpenConnections()
    watch = RedisRevocationWatch(revocations=marks, connections=connections)
    hub = make_hub(connect_subscriber=subscriber, listeners=[watch], ping_seconds=0.5)
    running = asyncio.create_task(hub.run())
    user = SignedInUser(user_id=uuid.uuid4(), roles=frozenset(), expires_at=time.time() + 600, issued_at=1000.0)
    ended = asyncio.Event()
    try:
        await asyncio.wait_for(hub.ready.wait(), TIMEOUT)
        await watch.watch(user=user, end=ended.set)

        gate.clear()
        (mine,) = [client["id"] for client in await redis.client_list() if client.get("name") == name]
        await redis.client_kill_filter(_id=mine)  # this hub's pub/sub connection, no one else's
        await eventually(_not_ready(hub), timeout=TIMEOUT, interval=0.02)
        await marks.revoke(user_id=user.user_id, at=2000.0)  # announced to nobody
        assert not ended.is_set()

        gate.set()
        async with asyncio.timeout(TIMEOUT):
            await ended.wait()
        assert connections.users() == frozenset()
    finally:
        await cancel_and_wait([running])
