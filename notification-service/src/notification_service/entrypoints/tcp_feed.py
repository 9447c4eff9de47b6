"""The TCP feed on port 9000 (docs/api.md "Raw protocols"): newline-delimited JSON for
terminals and devices.

    on connect        {"type": "welcome", "clientId"}
    any JSON object   answered {"type": "echo", "originalMessage", "clientId"}; from an
                      authenticated client also relayed to the other authenticated
                      clients as {"type": "broadcast", "from", "message"}
    {"type": "auth", "token"}
                      an access token: {"type": "authenticated", "userId"}; from then on
                      the client's own notifications arrive as lines
                      {"type": "notification", "notification": {"id", "type", …}},
                      whichever instance handled them (they come from the live fan-out,
                      in stream order, each once), and the connection closes when the
                      token expires, or after {"type": "error", "detail": "token
                      revoked"} as soon as the user's tokens from then are revoked
    a malformed line  {"type": "error", "detail"}; the connection stays

Every client has a bounded outgoing queue written by its own task: a client that
does not read is disconnected when its queue is full, and never slows the others.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from interchange_common.actors import SignedInUser
from notification_service.adapters.errors import LiveUnavailable
from notification_service.domain.errors import SubscriptionEnded
from notification_service.domain.live_push import LiveNotification
from notification_service.domain.ports import LiveFanout, LiveSubscription, RevocationWatch
from notification_service.domain.websocket_protocol import notification_frame
from notification_service.entrypoints.signin import Authenticate, Rejected

_log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Client:
    id: str
    writer: asyncio.StreamWriter
    outbox: "asyncio.Queue[bytes | None]"
    user: SignedInUser | None = None
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)
    subscription: LiveSubscription | None = field(default=None, repr=False)
    following: "asyncio.Task[None] | None" = field(default=None, repr=False)
    unwatch: Callable[[], None] | None = field(default=None, repr=False)

    def send(self, message: dict[str, Any]) -> bool:
        """Queue one line; False when the client is too slow to take it."""
        return self.send_line(orjson.dumps(message) + b"\n")

    def send_line(self, line: bytes) -> bool:
        try:
            self.outbox.put_nowait(line)
        except asyncio.QueueFull:
            return False
        return True


class TcpFeed:
    def __init__(
        self,
        *,
        authenticate: Authenticate,
        hub: LiveFanout | None = None,
        revocations: RevocationWatch | None = None,
        max_line_bytes: int = 16 * 1024,
        queue_size: int = 256,
    ) -> None:
        self._authenticate = authenticate
        self._hub = hub
        self._revocations = revocations
        self._max_line = max_line_bytes
        self._queue_size = queue_size
        self._clients: dict[str, _Client] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def port(self) -> int:
        """The port it listens on (after ``start``; port 0 there picks a free one)."""
        if self._server is None:
            raise RuntimeError("the feed is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, *, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=self._max_line)
        _log.info("tcp feed listening", extra={"port": port})

    async def close(self) -> None:
        """Stop accepting, say goodbye to every client, and wait for them to go."""
        if self._server is not None:
            self._server.close()
        for client in list(self._clients.values()):
            self._drop(client)
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def _deliver(self, client: _Client, message: dict[str, Any]) -> bool:
        if client.send(message):
            return True
        _log.warning("tcp client too slow, disconnected", extra={"client_id": client.id})
        self._drop(client)
        return False

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.id, None) is None:
            return
        if client.expiry is not None:
            client.expiry.cancel()
        if client.unwatch is not None:
            client.unwatch()
        self._unfollow(client)
        try:
            client.outbox.put_nowait(None)  # the writer closes after what it has
        except asyncio.QueueFull:
            client.writer.transport.abort()  # too far behind to be told: cut off

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(id=uuid.uuid4().hex, writer=writer, outbox=asyncio.Queue(maxsize=self._queue_size))
        self._clients[client.id] = client
        connection = asyncio.current_task()
        if connection is not None:
            self._connections.add(connection)
            connection.add_done_callback(self._connections.discard)
        writing = asyncio.create_task(self._write(client), name=f"tcp-writer-{client.id}")
        client.send({"type": "welcome", "clientId": client.id})
        try:
            await self._read(client, reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._drop(client)
            with contextlib.suppress(Exception):
                await writing

    async def _read(self, client: _Client, reader: asyncio.StreamReader) -> None:
        while client.id in self._clients:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                client.send({"type": "error", "detail": f"a line is at most {self._max_line} bytes"})
                return  # the rest of that line cannot be told from the next one
            except asyncio.IncompleteReadError:
                return  # the client closed
            if line.strip():
                await self._handle(client, line)
            # A burst of lines from one client is read from the buffer without a pause:
            # let the writers run between them, so that queues fill only for clients
            # that really do not read.
            await asyncio.sleep(0)

    async def _handle(self, client: _Client, line: bytes) -> None:
        if client.id not in self._clients:
            return  # dropped (revoked, say) while the line was read: not acted on
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            client.send({"type": "error", "detail": "each line must be one JSON object"})
            return
        if not isinstance(message, dict):
            client.send({"type": "error", "detail": "each line must be one JSON object"})
            return
        if message.get("type") == "auth":
            await self._sign_in(client, message.get("token"))
            return
        client.send({"type": "echo", "originalMessage": message, "clientId": client.id})
        if client.user is None:
            return
        relay = {"type": "broadcast", "from": str(client.user.user_id), "message": message}
        for other in list(self._clients.values()):
            if other is not client and other.user is not None:
                self._deliver(other, relay)

    async def _sign_in(self, client: _Client, token: object) -> None:
        if not isinstance(token, str) or not token:
            client.send({"type": "error", "detail": "auth needs a token"})
            return
        try:
            user = await self._authenticate(token)
        except Rejected as e:
            client.send({"type": "error", "detail": f"not authenticated: {e}"})
            return
        if self._revocations is not None:
            unwatch = await self._revocations.watch(user=user, end=lambda: self._revoke(client))
            if client.id not in self._clients:  # gone meanwhile, or revoked already
                unwatch()
                return
            if client.unwatch is not None:
                client.unwatch()
            client.unwatch = unwatch
        client.user = user
        if client.expiry is not None:
            client.expiry.cancel()
        # The socket lives no longer than the token that opened it.
        client.expiry = asyncio.get_running_loop().call_later(
            max(user.expires_at - time.time(), 0.0), self._expire, client
        )
        client.send({"type": "authenticated", "userId": str(user.user_id)})
        await self._follow(client, user)

    async def _follow(self, client: _Client, user: SignedInUser) -> None:
        """Have the user's notifications sent to the client from now on."""
        self._unfollow(client)
        if self._hub is None:
            return
        try:
            subscription = await self._hub.subscribe(user_id=user.user_id, client_id=client.id, after=None)
        except LiveUnavailable:
            client.send({"type": "error", "detail": "notifications are unavailable right now; sign in again later"})
            return
        if client.id not in self._clients:  # gone while we subscribed
            subscription.close()
            return
        client.subscription = subscription
        client.following = asyncio.create_task(self._forward(client, subscription), name=f"tcp-follow-{client.id}")

    async def _forward(self, client: _Client, subscription: LiveSubscription) -> None:
        try:
            while True:
                item = await subscription.next()
                if isinstance(item, LiveNotification) and not client.send_line(
                    notification_frame(item.payload) + b"\n"
                ):
                    _log.warning("tcp client too slow, disconnected", extra={"client_id": client.id})
                    break
        except (SubscriptionEnded, LiveUnavailable) as e:
            _log.info("tcp client's notifications ended", extra={"client_id": client.id, "reason": str(e)})
        self._drop(client)

    def _unfollow(self, client: _Client) -> None:
        subscription, client.subscription = client.subscription, None
        following, client.following = client.following, None
        if subscription is not None:
            subscription.close()
        if following is not None and following is not asyncio.current_task():
            following.cancel()

    def _expire(self, client: _Client) -> None:
        client.send({"type": "error", "detail": "the token expired"})
        self._drop(client)

    def _revoke(self, client: _Client) -> None:
        client.user = None  # nothing more is relayed to or from it
        client.send({"type": "error", "detail": "token revoked"})
        self._drop(client)

    async def _write(self, client: _Client) -> None:
        writer = client.writer
        try:
            while (line := await client.outbox.get()) is not None and not writer.is_closing():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
