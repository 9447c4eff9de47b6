"""Live push on the HTTP port, for the gateway to pass through (/api/events, /ws).

Both routes need a service token (audience notification-service) and the user the
gateway calls for: X-Actor-Id, X-Actor-Roles, X-Actor-Expires (epoch seconds when
the user's access token expires; the connection ends then) and X-Actor-Issued-At
(its iat: the connection ends when the user's tokens issued until then are revoked,
on whichever instance holds it; see adapters.revocations). Refused: SSE → 401
problem; WebSocket → close 1008 with the reason.

GET /internal/events   Server-Sent Events. Resumes after ``Last-Event-ID`` (else the
                       ``last_event_id`` query parameter; neither: only new events);
                       a malformed id → 422. ``retry: 2000`` first, then
                       ``id: <stream id>`` / ``event: notification`` / ``data: <JSON>``
                       per notification, ``: keepalive`` after each heartbeat period
                       without a write. Ends when the token expires or is revoked, or
                       the service stops.
                       429 when the user already holds SSE_MAX_STREAMS_PER_USER streams
                       (counted in Redis across instances, like sockets), with
                       Retry-After and RateLimit-* describing that cap.
GET /internal/ws       WebSocket, JSON messages with a "type" (the list:
                       domain.websocket_protocol).
                       Closes: 1008 "too many connections" (per-user cap, counted in
                       Redis), 1008 "token expired", 1008 "token revoked" (no message
                       of the client's is acted on after it), 1009 a message over the
                       cap, 1000 "idle", 1012 the service stops, 1013 "too slow" (its
                       outgoing queue filled), 1011 Redis unavailable.

Both are written against the domain's LiveFanout (adapters.redis_fanout.LiveHub in
service, an in-memory fake in the unit tests).
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket
from prometheus_client import Gauge
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from interchange_common.actors import (
    ACTOR_EXPIRES_HEADER,
    ACTOR_ID_HEADER,
    ACTOR_ISSUED_AT_HEADER,
    ACTOR_ROLES_HEADER,
    SignedInUser,
    parse_roles,
)
from interchange_common.errors import ServiceAuthError
from interchange_common.servicejwt import ServiceTokenVerifier
from notification_service.adapters.errors import LiveUnavailable
from notification_service.domain import websocket_protocol as protocol
from notification_service.domain.errors import LiveMessageRejected, NotSignedIn, SubscriptionEnded, TooManyStreams
from notification_service.domain.live_push import (
    REVOKED,
    SHUTTING_DOWN,
    ConnectionKind,
    LiveFrame,
    LiveItem,
    LiveNotification,
    parse_stream_id,
)
from notification_service.domain.ports import LiveFanout, LiveSubscription, RevocationWatch

_log = logging.getLogger(__name__)
LIVE_CONNECTIONS = Gauge("notification_live_connections", "Open SSE streams and WebSockets here", ["kind"])

SSE_RETRY = b"retry: 2000\n\n"
SSE_KEEPALIVE = b": keepalive\n\n"
LAST_EVENT_ID_HEADER = "last-event-id"
_MAX_CLOSE_REASON = 120  # a close frame's reason is at most 123 bytes
_CLOSE_TIMEOUT_SECONDS = 2.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LiveLimits:
    heartbeat_seconds: float = 15.0
    max_message_bytes: int = 4096
    max_rooms: int = 20
    max_sockets_per_user: int = 5
    max_streams_per_user: int = 5
    idle_seconds: float = 120.0


def live_user(*, headers: Mapping[str, str], verifier: ServiceTokenVerifier, now: float) -> SignedInUser:
    """The user a live connection is for, or NotSignedIn (with the reason)."""
    try:
        verifier.verify_authorization(header=headers.get("authorization"))
    except ServiceAuthError as e:
        raise NotSignedIn(str(e)) from e
    raw_id = headers.get(ACTOR_ID_HEADER)
    if not raw_id:
        raise NotSignedIn("a live connection belongs to a signed-in user")
    try:
        user_id = uuid.UUID(raw_id)
    except ValueError as e:
        raise NotSignedIn("X-Actor-Id is not a user id") from e
    raw_expires = headers.get(ACTOR_EXPIRES_HEADER, "")
    if not raw_expires.isdigit() or len(raw_expires) > 12:
        raise NotSignedIn("X-Actor-Expires must be the token's expiry in epoch seconds")
    expires_at = float(raw_expires)
    if expires_at <= now:
        raise NotSignedIn("token expired")
    raw_issued = headers.get(ACTOR_ISSUED_AT_HEADER, "")
    if not raw_issued.isdigit() or len(raw_issued) > 12:
        raise NotSignedIn("X-Actor-Issued-At must be the token's iat in epoch seconds")
    roles = parse_roles(headers.get(ACTOR_ROLES_HEADER, ""))
    return SignedInUser(user_id=user_id, roles=roles, expires_at=expires_at, issued_at=float(raw_issued))


def _body(chunk: bytes, *, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


class EventStream(Response):
    """The SSE response: writes until the token expires or is revoked (the
    subscription is dropped), the service stops, or the client goes; the
    subscription, its lease and the revocation watch are released however it ends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        *,
        subscription: LiveSubscription,
        lease: Callable[[], Awaitable[None]],
        release: Callable[[], Awaitable[None]],
        unwatch: Callable[[], None],
        expires_at: float,
        heartbeat_seconds: float,
        clock: Clock,
    ) -> None:
        # Not Response.__init__: it would announce a content-length for the empty body.
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self._subscription = subscription
        self._lease = lease
        self._release = release
        self._unwatch = unwatch
        self._expires_at = expires_at
        self._heartbeat = heartbeat_seconds
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._stream(send))
        gone = asyncio.ensure_future(self._disconnected(receive))
        leasing = asyncio.ensure_future(self._lease())
        LIVE_CONNECTIONS.labels(kind="sse").inc()
        try:
            done, _ = await asyncio.wait({streaming, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            LIVE_CONNECTIONS.labels(kind="sse").dec()
            for task in (streaming, gone, leasing):
                task.cancel()
            await asyncio.gather(streaming, gone, leasing, return_exceptions=True)
            self._unwatch()
            self._subscription.close()
            with contextlib.suppress(LiveUnavailable):
                await self._release()
        if streaming in done and not streaming.cancelled():
            streaming.result()

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send(_body(SSE_RETRY))
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + (self._expires_at - self._clock())
        try:
            while (left := ends_at - loop.time()) > 0:
                try:
                    async with asyncio.timeout(min(self._heartbeat, left)):
                        item = await self._subscription.next()
                except TimeoutError:
                    if loop.time() >= ends_at:
                        break
                    await send(_body(SSE_KEEPALIVE))
                    continue
                if isinstance(item, LiveNotification):
                    await send(
                        _body(
                            b"id: %s\nevent: notification\ndata: %s\n\n" % (str(item.stream_id).encode(), item.payload)
                        )
                    )
        except SubscriptionEnded:
            pass
        except LiveUnavailable as e:
            # The client reconnects after ``retry`` and resumes from its last id.
            _log.warning("event stream ended: live push unavailable", extra={"error": str(e)})
        await send(_body(b"", more=False))


async def keep_lease(
    *, hub: LiveFanout, kind: ConnectionKind, user_id: uuid.UUID, connection_id: str, limit: int
) -> None:
    """Renew a connection's lease until cancelled (a crashed instance's lapse)."""
    while True:
        await asyncio.sleep(hub.lease_seconds / 3)
        try:
            await hub.acquire_connection(kind=kind, user_id=user_id, connection_id=connection_id, limit=limit)
        except LiveUnavailable:
            _log.warning("connection lease not renewed", extra={"kind": kind, "connection_id": connection_id})


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


def _close_for(reason: str) -> _Close:
    if reason == SHUTTING_DOWN:
        return _Close(1012, "server shutting down")
    if reason == REVOKED:
        return _Close(1008, REVOKED)
    return _Close(1013, "too slow")


_UNAVAILABLE = _Close(1011, "live push unavailable")


class LiveSocket:
    """One WebSocket: a reader (the client's messages), a writer (the subscription's
    items), and watchers for the token's expiry, a drop (a revocation drops it too),
    and the socket's lease."""

    def __init__(
        self,
        *,
        websocket: WebSocket,
        user: SignedInUser,
        hub: LiveFanout,
        revocations: RevocationWatch,
        limits: LiveLimits,
        clock: Clock,
    ) -> None:
        self._ws = websocket
        self._user = user
        self._hub = hub
        self._revocations = revocations
        self._limits = limits
        self._clock = clock
        self._client_id = uuid.uuid4().hex
        self._rooms = protocol.Rooms(limit=limits.max_rooms)

    async def serve(self) -> None:
        await self._ws.accept()
        user_id = self._user.user_id
        try:
            acquired = await self._hub.acquire_connection(
                kind="sockets", user_id=user_id, connection_id=self._client_id, limit=self._limits.max_sockets_per_user
            )
        except LiveUnavailable:
            await self._close(_UNAVAILABLE)
            return
        if not acquired:
            await self._close(_Close(1008, "too many connections"))
            return
        close: _Close | None = _UNAVAILABLE
        try:
            subscription = await self._hub.subscribe(
                user_id=user_id, client_id=self._client_id, after=None, private=True
            )
            unwatch: Callable[[], None] | None = None
            LIVE_CONNECTIONS.labels(kind="websocket").inc()
            try:
                unwatch = await self._revocations.watch(user=self._user, end=lambda: subscription.drop(reason=REVOKED))
                _log.info("websocket opened", extra={"client_id": self._client_id, "user_id": str(user_id)})
                self._reply(
                    subscription,
                    protocol.welcome(client_id=self._client_id, user_id=user_id, roles=self._user.roles),
                )
                close = await self._run(subscription)
            finally:
                LIVE_CONNECTIONS.labels(kind="websocket").dec()
                if unwatch is not None:
                    unwatch()
                subscription.close()
                await self._leave_every_room()
        except LiveUnavailable:
            close = _UNAVAILABLE
        finally:
            with contextlib.suppress(LiveUnavailable):
                await self._hub.release_connection(kind="sockets", user_id=user_id, connection_id=self._client_id)
        _log.info(
            "websocket closed",
            extra={"client_id": self._client_id, "code": close.code if close else None},
        )
        if close is not None:
            await self._close(close)

    async def _close(self, close: _Close) -> None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect, TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
                await self._ws.close(code=close.code, reason=close.reason[:_MAX_CLOSE_REASON])

    async def _run(self, subscription: LiveSubscription) -> _Close | None:
        tasks = [
            asyncio.ensure_future(self._read(subscription)),
            asyncio.ensure_future(self._write(subscription)),
            asyncio.ensure_future(self._dropped(subscription)),
            asyncio.ensure_future(self._expiry()),
            asyncio.ensure_future(self._keep_lease()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = next(task for task in tasks if task in done)
        return first.result()

    async def _read(self, subscription: LiveSubscription) -> _Close | None:
        while True:
            try:
                async with asyncio.timeout(self._limits.idle_seconds):
                    message = await self._ws.receive()
            except TimeoutError:
                return _Close(1000, "idle")
            if message["type"] == "websocket.disconnect":
                return None
            text, data = message.get("text"), message.get("bytes")
            raw = text.encode() if text is not None else (data or b"")
            if len(raw) > self._limits.max_message_bytes:
                return _Close(1009, "message too big")
            await self._handle(subscription, raw)

    async def _write(self, subscription: LiveSubscription) -> _Close:
        send_text = self._ws.send_text
        try:
            while True:
                # What came in a burst goes out before the writer waits again: one wake-up
                # for all of it, and the subscription's queue still holds what is not sent.
                item: LiveItem | None = await subscription.next()
                while item is not None:
                    if isinstance(item, LiveFrame):
                        await send_text(item.data.decode())
                    else:
                        await send_text(protocol.notification_frame(item.payload).decode())
                    item = subscription.take_nowait()
        except SubscriptionEnded as e:
            return _close_for(e.reason)
        except LiveUnavailable:
            return _UNAVAILABLE

    @staticmethod
    async def _dropped(subscription: LiveSubscription) -> _Close:
        # A writer stuck on a client that does not read never sees the drop: this does.
        await subscription.ended.wait()
        return _close_for(subscription.end_reason)

    async def _expiry(self) -> _Close:
        await asyncio.sleep(max(self._user.expires_at - self._clock(), 0.0))
        return _Close(1008, "token expired")

    async def _keep_lease(self) -> None:
        await keep_lease(
            hub=self._hub,
            kind="sockets",
            user_id=self._user.user_id,
            connection_id=self._client_id,
            limit=self._limits.max_sockets_per_user,
        )

    def _reply(self, subscription: LiveSubscription, frame: dict[str, Any]) -> None:
        subscription.offer(LiveFrame(data=orjson.dumps(frame)))

    async def _handle(self, subscription: LiveSubscription, raw: bytes) -> None:
        if subscription.ended.is_set():
            # Dropped (revoked, say) and about to close: a message read meanwhile is
            # not acted on, so no room hears from a revoked token.
            return
        try:
            command = protocol.parse_client_message(raw)
            if isinstance(command, protocol.Ping):
                self._reply(subscription, protocol.PONG)
            elif isinstance(command, protocol.JoinRoom):
                await self._join(subscription, command.room)
            elif isinstance(command, protocol.LeaveRoom):
                await self._leave(subscription, command.room)
            elif isinstance(command, protocol.SendToRoom):
                self._rooms.require(command.room)
                frame = protocol.room_message(
                    room=command.room,
                    sender=self._user.user_id,
                    client_id=self._client_id,
                    message=command.message,
                    sent_at=datetime.now(UTC),
                )
                await self._hub.publish_room(room=command.room, source=self._client_id, frame=frame, skip_source=False)
            else:
                frame = protocol.private_message(
                    sender=self._user.user_id, message=command.message, sent_at=datetime.now(UTC)
                )
                await self._hub.publish_private(user_id=command.target_user_id, source=self._client_id, frame=frame)
        except LiveMessageRejected as e:
            self._reply(subscription, protocol.error(str(e)))
        except LiveUnavailable:
            self._reply(subscription, protocol.error("live push is unavailable right now; try again"))

    async def _join(self, subscription: LiveSubscription, room: str) -> None:
        self._rooms.join(room)
        # In the room before the news goes out: nothing said after it is missed. The
        # joiner's own user_joined comes back through the channel, in order with the rest.
        subscription.enter_room(room)
        frame = protocol.user_joined(room=room, user_id=self._user.user_id, client_id=self._client_id)
        try:
            await self._hub.publish_room(room=room, source=self._client_id, frame=frame, skip_source=False)
        except LiveUnavailable:
            self._rooms.leave(room)
            subscription.exit_room(room)
            raise

    async def _leave(self, subscription: LiveSubscription, room: str) -> None:
        self._rooms.leave(room)
        # Out of the room at once; the leaver's own user_left is the last it hears of it.
        subscription.exit_room(room)
        frame = protocol.user_left(room=room, user_id=self._user.user_id, client_id=self._client_id)
        self._reply(subscription, frame)
        await self._hub.publish_room(room=room, source=self._client_id, frame=frame, skip_source=True)

    async def _leave_every_room(self) -> None:
        for room in self._rooms:
            frame = protocol.user_left(room=room, user_id=self._user.user_id, client_id=self._client_id)
            with contextlib.suppress(LiveUnavailable, TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
                    await self._hub.publish_room(room=room, source=self._client_id, frame=frame, skip_source=True)


def live_router(
    *,
    hub: LiveFanout,
    revocations: RevocationWatch,
    verifier: ServiceTokenVerifier,
    limits: LiveLimits,
    clock: Clock = time.time,
) -> APIRouter:
    router = APIRouter(prefix="/internal", tags=["live"])

    # status_code: FastAPI cannot read it off EventStream, and its document would fail.
    @router.get("/events", response_class=EventStream, status_code=200)
    async def events(request: Request) -> Response:
        user = live_user(headers=request.headers, verifier=verifier, now=clock())
        raw = request.headers.get(LAST_EVENT_ID_HEADER) or request.query_params.get("last_event_id")
        after = parse_stream_id(raw.strip()) if raw else None
        stream_id = uuid.uuid4().hex
        limit = limits.max_streams_per_user

        async def lease() -> None:
            await keep_lease(hub=hub, kind="streams", user_id=user.user_id, connection_id=stream_id, limit=limit)

        async def release() -> None:
            await hub.release_connection(kind="streams", user_id=user.user_id, connection_id=stream_id)

        if not await hub.acquire_connection(kind="streams", user_id=user.user_id, connection_id=stream_id, limit=limit):
            # When to come back: the soonest a slot frees by itself, as the earliest lease
            # lapses unless renewed (a crashed instance's never is). A stream its client
            # closes frees its slot sooner, at once.
            frees_in = await hub.first_lapse_in(kind="streams", user_id=user.user_id)
            raise TooManyStreams(limit=limit, frees_in_seconds=frees_in)
        try:
            subscription = await hub.subscribe(user_id=user.user_id, client_id=stream_id, after=after)
        except BaseException:
            with contextlib.suppress(LiveUnavailable):
                await release()
            raise
        try:
            # Already revoked: the subscription is dropped here, and the stream ends at once.
            unwatch = await revocations.watch(user=user, end=lambda: subscription.drop(reason=REVOKED))
        except BaseException:
            subscription.close()
            with contextlib.suppress(LiveUnavailable):
                await release()
            raise
        return EventStream(
            subscription=subscription,
            lease=lease,
            release=release,
            unwatch=unwatch,
            expires_at=user.expires_at,
            heartbeat_seconds=limits.heartbeat_seconds,
            clock=clock,
        )

    @router.websocket("/ws")
    async def websocket(websocket: WebSocket) -> None:
        try:
            user = live_user(headers=websocket.headers, verifier=verifier, now=clock())
        except NotSignedIn as e:
            await websocket.accept()
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.close(code=1008, reason=str(e)[:_MAX_CLOSE_REASON])
            return
        await LiveSocket(
            websocket=websocket, user=user, hub=hub, revocations=revocations, limits=limits, clock=clock
        ).serve()

    return router
