"""Clients for a running stack's live channels, through its gateway: what the e2e
tests, the fault tests and the benchmark drive.

    EventStream   GET /api/events, Server-Sent Events (httpx-sse), resumable by id
    Follower      a user's event stream that reopens itself from its last id, as a
                  browser's EventSource does
    Chat          GET /ws, the JSON WebSocket of rooms and private messages
    Terminal      the TCP feed of a notification instance (port 9000)
    Device        the UDP feed of a notification instance (port 9001)
"""

import contextlib
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent, connect_sse
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from devstack.accounts import Account
from devstack.testing import wait_for

WELCOME = "user.created"  # the welcome notification: the order tests look past it


def ticket(gateway: httpx.Client, account: Account) -> str:
    """A single-use ticket for a browser-style connection (``?ticket=``)."""
    response = gateway.post("/api/auth/ticket", headers=account.headers)
    if response.status_code != 200:
        raise AssertionError(f"ticket: {response.status_code} {response.text}")
    return str(response.json()["ticket"])


class StreamEnded(Exception):
    """The event stream closed: resume from ``EventStream.last_id`` on a new one."""


class EventStream:
    """One SSE connection; ``next()`` is the next event (heartbeat comments are skipped),
    ``last_id`` the id to resume from."""

    def __init__(
        self,
        gateway: httpx.Client,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        last_event_id: str | None = None,
        read_timeout: float = 30.0,
    ) -> None:
        self._gateway = gateway
        self._headers = dict(headers or {})
        if last_event_id is not None:
            self._headers["Last-Event-ID"] = last_event_id
        self._params = params or {}
        self._timeout = httpx.Timeout(10.0, read=read_timeout)
        self._stack = contextlib.ExitStack()
        self._source: EventSource | None = None
        self._events: Iterator[ServerSentEvent] | None = None
        self.last_id: str | None = last_event_id

    def __enter__(self) -> "EventStream":
        self._source = self._stack.enter_context(
            connect_sse(
                self._gateway, "GET", "/api/events", headers=self._headers, params=self._params, timeout=self._timeout
            )
        )
        self._events = self._source.iter_sse()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()

    @property
    def response(self) -> httpx.Response:
        assert self._source is not None, "use EventStream as a context manager"
        return self._source.response

    def next(self) -> ServerSentEvent:
        """The next event; ``StreamEnded`` when the server ended the stream or went away."""
        assert self._events is not None, "use EventStream as a context manager"
        try:
            event = next(self._events)
        except (StopIteration, httpx.RemoteProtocolError, httpx.ReadError) as e:
            raise StreamEnded(str(e) or "the server ended the stream") from e
        if event.id:
            self.last_id = event.id
        return event

    def notifications(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` notification events' payloads, in the order they came."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = self.next()
            if event.event == "notification":
                found.append(event.json())
        return found


class _Messages:
    """A channel of JSON messages with a "type"; ``receive`` is the next one."""

    def receive(self) -> dict[str, Any]:
        raise NotImplementedError

    def receive_type(self, kind: str) -> dict[str, Any]:
        """The next message of ``kind``, past any others."""
        while (message := self.receive())["type"] != kind:
            pass
        return message


class Chat(_Messages):
    """One WebSocket through the gateway, signed in with an Authorization header (or a
    ticket, as a browser does); ``receive_type`` skips messages of other types."""

    def __init__(
        self,
        gateway_url: str,
        *,
        account: Account | None = None,
        ticket: str | None = None,
        origin: str | None = None,
        timeout: float = 20.0,
    ) -> None:
        parts = urlsplit(gateway_url)
        query = urlencode({"ticket": ticket}) if ticket is not None else ""
        self.url = urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, "/ws", query, ""))
        self._headers = account.headers if account is not None else {}
        self._origin = origin
        self._timeout = timeout
        self._connection: ClientConnection | None = None
        self._exits = ExitStack()

    def __enter__(self) -> "Chat":
        self._connection = self._exits.enter_context(
            connect(
                self.url,
                additional_headers=self._headers,
                origin=None if self._origin is None else Origin(self._origin),
                open_timeout=self._timeout,
                max_size=2**20,
            )
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._exits.close()

    @property
    def connection(self) -> ClientConnection:
        assert self._connection is not None, "use Chat as a context manager"
        return self._connection

    def send(self, message: dict[str, Any]) -> None:
        self.connection.send(orjson.dumps(message).decode())

    def receive(self) -> dict[str, Any]:
        raw = self.connection.recv(timeout=self._timeout)
        message: dict[str, Any] = orjson.loads(raw)
        return message

    def close_code(self) -> int | None:
        """Read until the server closes; its close code (None when it closed without one)."""
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                self.connection.recv(timeout=self._timeout)
        return self.connection.close_code

    @property
    def close_reason(self) -> str:
        return self.connection.close_reason or ""


class Follower:
    """One user's order notifications, followed across the stream's ends: each time
    it ends, it is opened again (the gateway answers 503 until it finds a live
    instance) from the last event id, so nothing is missed and nothing comes twice."""

    def __init__(self, gateway: httpx.Client, account: Account, *, reopen_timeout: float = 60.0) -> None:
        self._gateway = gateway
        self._account = account
        self._reopen_timeout = reopen_timeout
        self._exits = ExitStack()
        self._stream = self._exits.enter_context(EventStream(gateway, headers=account.headers))
        self.reconnects = 0

    def _reopen(self) -> None:
        last = self._stream.last_id
        self._exits.close()
        self._stream = wait_for(
            lambda: self._try_open(last_event_id=last),
            timeout=self._reopen_timeout,
            interval=0.2,
            what="the event stream to reopen",
        )
        self.reconnects += 1

    def _try_open(self, *, last_event_id: str | None) -> EventStream | None:
        self._exits = ExitStack()
        try:
            stream = self._exits.enter_context(
                EventStream(self._gateway, headers=self._account.headers, last_event_id=last_event_id)
            )
        except httpx.HTTPError:
            return None
        if stream.response.status_code != 200:
            self._exits.close()
            return None
        return stream

    def orders(self, count: int) -> list[str]:
        """The order ids of the next ``count`` order notifications."""
        found: list[str] = []
        while len(found) < count:
            try:
                notification = self._stream.notifications(1)[0]
            except StreamEnded:
                self._reopen()
                continue
            if notification["type"] != WELCOME:
                found.append(str(notification["data"]["order_id"]))
        return found

    def close(self) -> None:
        self._exits.close()


class Terminal(_Messages):
    """The TCP feed (newline-delimited JSON), as a terminal uses it."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.lines = self.socket.makefile("rb")

    def send(self, message: dict[str, Any]) -> None:
        self.socket.sendall(orjson.dumps(message) + b"\n")

    def receive(self) -> dict[str, Any]:
        line = self.lines.readline()
        assert line, "the feed closed the connection"
        message: dict[str, Any] = orjson.loads(line)
        return message

    def close(self) -> None:
        self.lines.close()
        self.socket.close()


class Device:
    """The UDP feed (one JSON datagram each way), as a device uses it."""

    def __init__(self, port: int) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.settimeout(10)
        self.socket.connect(("127.0.0.1", port))

    def send(self, message: dict[str, Any]) -> None:
        self.socket.send(orjson.dumps(message))

    def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = orjson.loads(self.socket.recv(65_536))
        return message

    def close(self) -> None:
        self.socket.close()
