"""Live push across instances through Redis (redis-py asyncio): LiveHub, the domain's
LiveFanout, and Subscription, its LiveSubscription.

    Redis, shared by every instance (every name starts with "<prefix>:live:")
    ├── stream:<user>      a Stream per user: each notification once (XADD), the SSE
    │                      history; trimmed by length (MAXLEN ~) and age (MINID ~), and
    │                      the key expires once it has been idle that long
    ├── pushed:<id>        "notification <id> is in its stream" (SET NX, a day): the push
    │                      script is idempotent, so a rerun after a crash adds nothing
    ├── sockets:<user>     ZSET of the user's WebSocket ids scored by lease expiry, and
    ├── streams:<user>     of their SSE streams: a crashed instance's connections lapse
    │                      by themselves
    └── channels notifications | rooms | private (and the listeners' own, such as
              │ revocations: adapters.revocations)
              │ PUBLISH (the push script publishes in the same atomic step as the XADD)
              ▼
    LiveHub, one per instance: one pub/sub connection, and the local Subscriptions by
              │ user and by room; each has a bounded queue, and one that falls behind
              │ is dropped, never waited for
              ▼
    an SSE stream, a WebSocket, a TCP client

Three fixed channels, filtered locally, rather than a channel per user or room: an
instance subscribes once when it connects, never per socket, so a reconnection is one
SUBSCRIBE and no subscription can be forgotten in between, and joining a room costs
no round trip. The price is that every instance hears all live traffic and drops what
none of its sockets wants (a dict lookup); channels sharded by user would be the next
step if that ever mattered more than the simplicity.

Pub/sub loses what is published while a subscriber is away. Notifications are also
in the stream, so after every (re)subscription the hub tells each local subscriber to
refill from its stream after the last id it delivered (XRANGE, exclusive); room and
private messages are ephemeral and are not replayed. A listener catches up its own
way (``ChannelListener.caught_up``).
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, Protocol

import orjson
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from interchange_common import tracing
from interchange_common.tasks import run_forever
from notification_service.adapters.errors import LiveUnavailable
from notification_service.domain.errors import InvalidStreamId, SubscriptionEnded
from notification_service.domain.live_push import (
    BEFORE_ALL,
    CLOSED,
    SHUTTING_DOWN,
    TOO_SLOW,
    ConnectionKind,
    LiveFrame,
    LiveItem,
    LiveNotification,
    StreamId,
    parse_stream_id,
)

_log = logging.getLogger(__name__)

PUSHED_MARKER_SECONDS = 86_400
_HISTORY_PAGE = 500

LIVE_PUSHED = Counter("notification_live_pushed_total", "Notifications added to a user's stream and published")
LIVE_DROPPED = Counter("notification_live_subscribers_dropped_total", "Local live subscribers dropped", ["reason"])
LIVE_RESUBSCRIBED = Counter("notification_live_subscriptions_total", "Times the pub/sub connection (re)subscribed")

# KEYS[1] the pushed marker, KEYS[2] the user's stream.
# ARGV: channel, user id, payload, max length, max age in ms, marker seconds, the
# pushing span's traceparent ("-": none). Published as "<user> <id> <traceparent> <payload>".
# Returns {1, id} when added and published now, {0, id} when it already was.
_PUSH = """
if not redis.call('SET', KEYS[1], '', 'NX', 'EX', ARGV[6]) then
  return {0, redis.call('GET', KEYS[1])}
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'n', ARGV[3])
local ms = tonumber(string.match(id, '^(%d+)'))
local oldest = math.max(ms - tonumber(ARGV[5]), 0)
redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', oldest))
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('SET', KEYS[1], id, 'XX', 'KEEPTTL')
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. id .. ' ' .. ARGV[7] .. ' ' .. ARGV[3])
return {1, id}
"""

# KEYS[1] the user's set of connections of one kind. ARGV: connection id, limit, lease
# in ms. Expired leases go first; a connection already in the set renews its lease
# whatever the count.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class ChannelListener(Protocol):
    """Another channel heard on the hub's pub/sub connection."""

    @property
    def channel(self) -> bytes: ...

    def heard(self, data: bytes) -> None:
        """One message on the channel (quick: the hub's other channels wait)."""

    async def caught_up(self) -> None:
        """After each (re)subscription: make up for what was published while away."""


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if value is None:
        raise LiveUnavailable("Redis answered with nothing where an id was due")
    return value


def _raw(value: bytes | str | None) -> bytes:
    return value.encode() if isinstance(value, str) else (value or b"")


class _Signal(Enum):
    REFILL = "refill"  # the pub/sub connection was away: read the stream after the cursor
    END = "end"


class Subscription:
    """One local subscriber: an SSE stream, a WebSocket or a TCP client.

    ``next`` gives what it should send, in order: notifications in stream order, each
    once (a notification at or before the cursor, the last stream id handed out, is a
    duplicate and skipped), and frames (room and private messages, replies) as they
    came. It reads the stream after the cursor first, and again whenever the hub
    (re)subscribes. Cancelling ``next`` loses nothing. ``take_nowait`` is the same
    without waiting, for a writer to send what came in a burst before it waits again.
    One reader at a time.

    The queue is a deque and a future its reader waits on, not an asyncio.Queue: an
    offer is on the path of every frame to every socket, and this costs less.
    """

    def __init__(
        self,
        *,
        hub: "LiveHub",
        user_id: uuid.UUID,
        client_id: str,
        cursor: StreamId,
        queue_size: int,
        private: bool,
    ) -> None:
        self.user_id = user_id
        self.client_id = client_id
        self.private = private  # hears private messages (WebSockets)
        self.rooms: set[str] = set()  # kept by LiveHub.enter_room / exit_room
        self.cursor = cursor
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._hub = hub
        self._queue: deque[LiveItem | _Signal] = deque()
        self._queue_size = queue_size
        self._waiter: asyncio.Future[None] | None = None  # the reader's, while it waits
        self._ready: deque[LiveNotification] = deque()
        self._refill = True

    def offer(self, item: LiveItem) -> bool:
        """Queue an item without waiting; a subscriber whose queue is full is dropped."""
        return self._put(item)

    def _put(self, item: LiveItem | _Signal) -> bool:
        if self.ended.is_set():
            return False
        if len(self._queue) >= self._queue_size:
            self._hub.drop(self, reason=TOO_SLOW)
            return False
        self._queue.append(item)
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def enter_room(self, room: str) -> None:
        self._hub.enter_room(self, room)

    def exit_room(self, room: str) -> None:
        self._hub.exit_room(self, room)

    def drop(self, *, reason: str) -> None:
        self._hub.drop(self, reason=reason)

    def close(self) -> None:
        self._hub.unsubscribe(self)

    def refill(self) -> None:
        """Read the stream after the cursor before anything else (the hub was away)."""
        self._put(_Signal.REFILL)

    def end(self, reason: str) -> None:
        """Drop what is queued; ``next`` raises SubscriptionEnded from now on (the
        subscription's half of ``drop`` and ``close``; the hub forgets it first)."""
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.ended.set()
        self._queue.clear()
        self._queue.append(_Signal.END)
        self._wake()

    async def next(self) -> LiveItem:
        """The next item to send. SubscriptionEnded once dropped; LiveUnavailable when
        the stream cannot be read (the caller ends the connection: a client that
        comes back resumes from its last event id)."""
        while True:
            item = self.take_nowait()
            if item is not None:
                return item
            if self._refill:
                await self._fill()
                continue
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def take_nowait(self) -> LiveItem | None:
        """The next item to send if it is here already; None when ``next`` would have to
        wait or read the stream first. SubscriptionEnded once dropped."""
        while True:
            if self.ended.is_set():
                raise SubscriptionEnded(self.end_reason)
            if self._refill:
                return None
            if self._ready:
                return self._ready.popleft()
            if not self._queue:
                return None
            item = self._queue.popleft()
            if item is _Signal.REFILL:
                self._refill = True
                continue
            if item is _Signal.END:
                continue
            if isinstance(item, LiveNotification):
                if item.stream_id <= self.cursor:
                    continue
                self.cursor = item.stream_id
            return item

    async def _fill(self) -> None:
        entries = await self._hub.history(user_id=self.user_id, after=self.cursor)
        # No await from here on: a cancellation cannot leave the cursor half moved.
        for entry in entries:
            if entry.stream_id > self.cursor:
                self._ready.append(entry)
                self.cursor = entry.stream_id
        self._refill = False


class LiveHub:
    """This instance's end of the fan-out; see the module's docstring."""

    def __init__(
        self,
        *,
        redis: Redis,
        connect_subscriber: Callable[[], Redis],
        key_prefix: str,
        history_max_length: int,
        history_max_age_seconds: int,
        queue_size: int = 256,
        lease_seconds: float = 60.0,
        ping_seconds: float = 5.0,
        listeners: Sequence[ChannelListener] = (),
    ) -> None:
        self._redis = redis
        self._connect_subscriber = connect_subscriber
        self._prefix = f"{key_prefix}:live"
        self._max_length = history_max_length
        self._max_age_ms = history_max_age_seconds * 1000
        self._queue_size = queue_size
        self.lease_seconds = lease_seconds
        self._ping_seconds = ping_seconds
        self._push = redis.register_script(_PUSH)
        self._lease = redis.register_script(_LEASE)
        self.notifications_channel = f"{self._prefix}:notifications".encode()
        self.rooms_channel = f"{self._prefix}:rooms".encode()
        self.private_channel = f"{self._prefix}:private".encode()
        self._listeners = {listener.channel: listener for listener in listeners}
        self._subscriptions: set[Subscription] = set()
        self._by_user: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._by_room: defaultdict[str, set[Subscription]] = defaultdict(set)
        self._closing = False
        self.ready = asyncio.Event()  # subscribed to the channels right now

    # Keys -------------------------------------------------------------------------

    def stream_key(self, user_id: uuid.UUID) -> str:
        return f"{self._prefix}:stream:{user_id}"

    def pushed_key(self, notification_id: uuid.UUID) -> str:
        return f"{self._prefix}:pushed:{notification_id}"

    def connections_key(self, kind: ConnectionKind, user_id: uuid.UUID) -> str:
        return f"{self._prefix}:{kind}:{user_id}"

    # Writing ----------------------------------------------------------------------

    async def push(
        self, *, notification_id: uuid.UUID, user_id: uuid.UUID, payload: bytes, traceparent: str | None = None
    ) -> tuple[StreamId, bool]:
        """Add a notification to its user's stream and publish it, once per id whoever
        asks and however often: the stream id, and whether it was added by this call.
        ``traceparent`` goes with the published message (not into the stream), for the
        instances that deliver it to continue the trace."""
        try:
            added, raw_id = await self._push(
                keys=[self.pushed_key(notification_id), self.stream_key(user_id)],
                args=[
                    self.notifications_channel,
                    str(user_id),
                    payload,
                    self._max_length,
                    self._max_age_ms,
                    PUSHED_MARKER_SECONDS,
                    traceparent or "-",
                ],
            )
        except RedisError as e:
            raise LiveUnavailable("could not push a notification") from e
        if added:
            LIVE_PUSHED.inc()
        return parse_stream_id(raw_id.decode()), bool(added)

    async def publish_room(self, *, room: str, source: str, frame: dict[str, Any], skip_source: bool) -> None:
        """Send a frame to every socket in the room on every instance; with
        ``skip_source`` not to the socket it comes from (which was answered directly)."""
        body = {"room": room, "source": source, "skipSource": skip_source, "frame": frame}
        await self._publish(self.rooms_channel, orjson.dumps(body))

    async def publish_private(self, *, user_id: uuid.UUID, source: str, frame: dict[str, Any]) -> None:
        """Send a frame to every WebSocket of the user on every instance but ``source``."""
        body = {"userId": str(user_id), "source": source, "frame": frame}
        await self._publish(self.private_channel, orjson.dumps(body))

    async def _publish(self, channel: bytes, body: bytes) -> None:
        try:
            await self._redis.publish(channel, body)
        except RedisError as e:
            raise LiveUnavailable("could not publish") from e

    # Reading ----------------------------------------------------------------------

    async def last_id(self, *, user_id: uuid.UUID) -> StreamId:
        """The id of the user's newest notification in the stream (0-0 when none)."""
        try:
            entries = await self._redis.xrevrange(self.stream_key(user_id), max="+", min="-", count=1)
        except RedisError as e:
            raise LiveUnavailable("could not read a stream") from e
        return parse_stream_id(_text(entries[0][0])) if entries else BEFORE_ALL

    async def history(self, *, user_id: uuid.UUID, after: StreamId) -> list[LiveNotification]:
        """The user's notifications after ``after`` (exclusive), oldest first."""
        key = self.stream_key(user_id)
        found: list[LiveNotification] = []
        start = f"({after}"
        try:
            while True:
                entries = await self._redis.xrange(key, min=start, max="+", count=_HISTORY_PAGE) or []
                for raw_id, fields in entries:
                    payload = (fields or {}).get(b"n")
                    if payload is not None:
                        found.append(LiveNotification(stream_id=parse_stream_id(_text(raw_id)), payload=_raw(payload)))
                if len(entries) < _HISTORY_PAGE:
                    return found
                start = f"({_text(entries[-1][0])}"
        except RedisError as e:
            raise LiveUnavailable("could not read a stream") from e

    # Connection leases (WebSockets, SSE streams) -------------------------------------

    async def acquire_connection(
        self, *, kind: ConnectionKind, user_id: uuid.UUID, connection_id: str, limit: int
    ) -> bool:
        """Count a connection of the user (across instances); False when the user
        already has ``limit`` live ones of this kind. Renewing always succeeds."""
        try:
            granted = await self._lease(
                keys=[self.connections_key(kind, user_id)],
                args=[connection_id, limit, int(self.lease_seconds * 1000)],
            )
        except RedisError as e:
            raise LiveUnavailable(f"could not count the user's {kind}") from e
        return bool(granted)

    async def release_connection(self, *, kind: ConnectionKind, user_id: uuid.UUID, connection_id: str) -> None:
        try:
            await self._redis.zrem(self.connections_key(kind, user_id), connection_id)
        except RedisError as e:
            raise LiveUnavailable(f"could not release one of the user's {kind}") from e

    async def first_lapse_in(self, *, kind: ConnectionKind, user_id: uuid.UUID) -> float:
        """Seconds until the earliest of the user's leases of this kind runs out unless
        renewed (0 when none is held), by Redis's clock like the leases themselves."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.zrange(self.connections_key(kind, user_id), 0, 0, withscores=True)
                (seconds, microseconds), earliest = await pipe.execute()
        except RedisError as e:
            raise LiveUnavailable(f"could not read the user's {kind}") from e
        if not earliest:
            return 0.0
        now = float(seconds) + float(microseconds) / 1_000_000
        return max(0.0, float(earliest[0][1]) / 1000 - now)

    # Local subscribers ----------------------------------------------------------------

    async def subscribe(
        self, *, user_id: uuid.UUID, client_id: str, after: StreamId | None, private: bool = False
    ) -> Subscription:
        """A local subscriber for the user's notifications after ``after`` (None: only
        those to come). The stream's position is read before the subscriber is
        registered, and the subscriber reads the stream after it before anything
        live: nothing falls in between, and duplicates are skipped by stream id."""
        if self._closing:
            raise LiveUnavailable(SHUTTING_DOWN)
        cursor = after if after is not None else await self.last_id(user_id=user_id)
        subscription = Subscription(
            hub=self, user_id=user_id, client_id=client_id, cursor=cursor, queue_size=self._queue_size, private=private
        )
        self._subscriptions.add(subscription)
        self._by_user[str(user_id)].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._forget(subscription)
        subscription.end(CLOSED)

    def enter_room(self, subscription: Subscription, room: str) -> None:
        if subscription in self._subscriptions:
            subscription.rooms.add(room)
            self._by_room[room].add(subscription)

    def exit_room(self, subscription: Subscription, room: str) -> None:
        subscription.rooms.discard(room)
        members = self._by_room.get(room)
        if members is not None:
            members.discard(subscription)
            if not members:
                del self._by_room[room]

    def drop(self, subscription: Subscription, *, reason: str) -> None:
        if subscription.ended.is_set():
            return
        self._forget(subscription)
        subscription.end(reason)
        LIVE_DROPPED.labels(reason).inc()
        if reason == TOO_SLOW:
            _log.warning("live subscriber too slow, dropped", extra={"client_id": subscription.client_id})

    def shutdown(self) -> None:
        """End every local subscriber and take no new ones (the service is stopping)."""
        self._closing = True
        for subscription in list(self._subscriptions):
            self.drop(subscription, reason=SHUTTING_DOWN)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        for room in list(subscription.rooms):
            self.exit_room(subscription, room)
        key = str(subscription.user_id)
        mine = self._by_user.get(key)
        if mine is not None:
            mine.discard(subscription)
            if not mine:
                del self._by_user[key]

    # The pub/sub connection ----------------------------------------------------------

    async def ping(self) -> None:
        """Health: Redis answers, and this instance is subscribed."""
        try:
            await self._redis.ping()
        except RedisError as e:
            raise LiveUnavailable("Redis does not answer") from e
        if not self.ready.is_set():
            raise LiveUnavailable("not subscribed to the live channels")

    async def run(self) -> None:
        """Stay subscribed until cancelled: after a drop, resubscribe with a growing,
        jittered pause (run_forever), then have every local subscriber refill."""
        await run_forever(name="live subscriber", session=self._session)

    async def _session(self, connected: Callable[[], None]) -> None:
        client = self._connect_subscriber()
        pubsub = client.pubsub()
        channels = (self.notifications_channel, self.rooms_channel, self.private_channel, *self._listeners)
        try:
            await pubsub.subscribe(*channels)
            # Only a confirmed subscription hears what is published from now on: wait
            # for it before anyone reads the streams to fill the gap.
            confirmed: set[bytes] = set()
            async with asyncio.timeout(10):
                while len(confirmed) < len(channels):
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "subscribe":
                        confirmed.add(message["channel"])
            self.ready.set()
            for subscription in list(self._subscriptions):
                subscription.refill()
            # Before connected(): a catch-up that keeps failing keeps backing off.
            for listener in self._listeners.values():
                await listener.caught_up()
            connected()
            LIVE_RESUBSCRIBED.inc()
            _log.info("live channels subscribed", extra={"subscribers": len(self._subscriptions)})
            await self._listen(pubsub)
        except RedisError as e:
            raise LiveUnavailable("the live subscription was interrupted") from e
        finally:
            self.ready.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(self, pubsub: Any) -> None:
        heard = pinged = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    self._dispatch(message["channel"], message["data"])
            if now - pinged >= self._ping_seconds:
                # A connection that died without a word (a cut network) answers no ping.
                await pubsub.ping()
                pinged = now
            if now - heard > 3 * self._ping_seconds:
                raise LiveUnavailable("the live subscription stopped answering")

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            if (listener := self._listeners.get(channel)) is not None:
                listener.heard(data)
            elif channel == self.notifications_channel:
                user, raw_id, traceparent, payload = data.split(b" ", 3)
                item = LiveNotification(stream_id=parse_stream_id(raw_id.decode()), payload=payload)
                subscriptions = list(self._by_user.get(user.decode(), ()))
                with tracing.continued_span(
                    "deliver live",
                    parent=traceparent,
                    kind=tracing.SpanKind.CONSUMER,
                    attributes={"interchange.live.subscribers": len(subscriptions)},
                ):
                    for subscription in subscriptions:
                        subscription.offer(item)
            elif channel == self.rooms_channel:
                body = orjson.loads(data)
                frame = LiveFrame(data=orjson.dumps(body["frame"]))
                source, skip = body["source"], bool(body["skipSource"])
                for subscription in list(self._by_room.get(body["room"], ())):
                    if not (skip and subscription.client_id == source):
                        subscription.offer(frame)
            elif channel == self.private_channel:
                body = orjson.loads(data)
                frame = LiveFrame(data=orjson.dumps(body["frame"]))
                for subscription in list(self._by_user.get(body["userId"], ())):
                    if subscription.private and subscription.client_id != body["source"]:
                        subscription.offer(frame)
        except (ValueError, KeyError, TypeError, InvalidStreamId):
            _log.warning("malformed live message ignored", extra={"channel": channel.decode(errors="replace")})
