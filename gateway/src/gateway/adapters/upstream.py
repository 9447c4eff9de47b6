"""Calls to the services behind the gateway (aiohttp, HTTP/1.1 keep-alive).

aiohttp's client, not httpx: measured on this kind of machine, a FastAPI proxy on
httpx.AsyncClient served 0.07x the requests per second of a direct call, on
aiohttp 0.6x (issue #2). One pooled session serves every upstream.

Three shapes of call, each to one instance that ``Instances`` names:

forward       a request and its whole answer (the REST routes, JWKS, health): UpstreamResponse
open_stream   a request whose answer is read as it comes (SSE): UpstreamStream, chunk by chunk
open_socket   a WebSocket: UpstreamSocket, message by message (SocketMessage), or the
              status with which the upstream refused the handshake (SocketOpening)

aiohttp stays in this module: what it hands back is wrapped in those types, so the
entry points never see it.

Each call goes through the upstream's circuit breaker (open: 503 at once, without
trying) and its balancer (interchange_common.balancing: weighted order, passive
ejection of an instance that keeps failing). Failover: when an instance refuses the
connection nothing was sent, so any call moves on to the next instance. A connection
dropped before any answer moves a GET on too (a GET may be repeated), and a request
with an ``Idempotency-Key`` to an upstream that answers a repeat with the first
outcome (``Upstream.idempotency_keys``); never another POST, which the instance may
already have carried out. Each move is a retry, taken from the upstream's retry
budget. A timeout never moves on: the caller's deadline is spent. What counts against
an instance and the breaker: refused or dropped connections, timeouts, 502 and 504;
an upstream's 503 is its answer about its own dependencies and counts as one.

Rolling restarts: an answer with ``Connection: close`` means the instance is draining
(interchange_common.lifecycle). The balancer puts it last for a while, so no request
goes out on a kept-alive connection to it that it is about to close.

Deadlines: the route's timeout is the whole call's; each attempt gets what is left
of it, and tells the instance in X-Request-Timeout-Ms (interchange_common.deadlines).
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
import orjson
from opentelemetry.instrumentation.aiohttp_client import create_trace_config

from gateway.domain.errors import UpstreamFailed, UpstreamTimeout, UpstreamUnavailable
from gateway.domain.model import Upstream
from interchange_common import tracing
from interchange_common.balancing import Balancer
from interchange_common.deadlines import DEADLINE_HEADER, DeadlineExceeded, deadline_in, header_value, remaining
from interchange_common.discovery import DiscoveryUnavailable
from interchange_common.resilience import CircuitBreaker, CircuitOpen, RetryBudget

# What the gateway hands back to the client from an upstream response (an upstream's
# own RateLimit-* fields describe its own limit: entrypoints.forwarding.answer_headers).
_LIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
_RESPONSE_HEADERS = (
    "content-type",
    "etag",
    "location",
    "cache-control",
    "retry-after",
    "www-authenticate",
    *_LIMIT_HEADERS,
)
_STREAM_HEADERS = (
    "content-type",
    "cache-control",
    "x-accel-buffering",
    "retry-after",
    "www-authenticate",
    *_LIMIT_HEADERS,
)
_REPEATABLE = frozenset({"GET", "HEAD", "OPTIONS"})
_IDEMPOTENCY_KEY = "idempotency-key"
_MAX_MESSAGE_BYTES = 1024 * 1024
# Answers that mean "the instance behind me failed", not an answer of the service's.
_GATEWAY_FAILURES = frozenset({502, 504})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    closing: bool = False  # the instance closes the connection: it is draining


def _closing(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("Connection", "").lower() == "close"


@dataclass(slots=True)
class UpstreamStream:
    """An upstream answer whose body is still arriving. ``close`` it when done."""

    status: int
    headers: dict[str, str]
    _response: aiohttp.ClientResponse = field(repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Each piece of the body as it arrives; ends quietly when the upstream goes
        away mid-stream (the client notices the end and reconnects)."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError):
            return
        finally:
            self._response.release()

    def close(self) -> None:
        self._response.close()


@dataclass(frozen=True, slots=True)
class SocketText:
    text: str


@dataclass(frozen=True, slots=True)
class SocketBytes:
    data: bytes


@dataclass(frozen=True, slots=True)
class SocketClosed:
    """The upstream's close frame: its code (None when it gave none) and reason."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SocketGone:
    """The connection ended without a close frame (dropped, or failed)."""


SocketMessage = SocketText | SocketBytes | SocketClosed | SocketGone


class UpstreamSocket:
    """An open upstream WebSocket. A message that cannot be sent because the upstream
    went away is UpstreamUnavailable; ``close`` it when done."""

    def __init__(self, *, upstream: str, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._upstream = upstream
        self._socket = socket

    @property
    def closed(self) -> bool:
        return self._socket.closed

    async def send_text(self, text: str) -> None:
        try:
            await self._socket.send_str(text)
        except (aiohttp.ClientError, ConnectionError) as e:
            raise UpstreamUnavailable(self._upstream) from e

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self._socket.send_bytes(data)
        except (aiohttp.ClientError, ConnectionError) as e:
            raise UpstreamUnavailable(self._upstream) from e

    async def receive(self) -> SocketMessage:
        """The next text or binary message, or how the socket ended (pings are answered
        underneath)."""
        message = await self._socket.receive()
        if message.type is aiohttp.WSMsgType.TEXT:
            return SocketText(message.data)
        if message.type is aiohttp.WSMsgType.BINARY:
            return SocketBytes(message.data)
        if message.type is aiohttp.WSMsgType.CLOSE:
            return SocketClosed(code=message.data, reason=str(message.extra or ""))
        return SocketGone()

    async def close(self, *, code: int = 1000) -> None:
        await self._socket.close(code=code)


@dataclass(frozen=True, slots=True)
class SocketOpening:
    """An open upstream WebSocket, or the status with which the upstream refused one."""

    socket: UpstreamSocket | None
    refused_status: int | None = None


def _trace_configs() -> list[aiohttp.TraceConfig]:
    """A CLIENT span per call, with ``traceparent`` sent (OpenTelemetry's aiohttp
    instrumentation), while tracing is on."""
    return [create_trace_config()] if tracing.enabled() else []


class UpstreamClient:
    def __init__(
        self,
        *,
        upstreams: Mapping[str, Upstream],
        balancers: Mapping[str, Balancer],
        breakers: Mapping[str, CircuitBreaker] | None = None,
        budgets: Mapping[str, RetryBudget] | None = None,
        max_connections: int = 256,
        live_read_timeout_seconds: float | None = None,
    ) -> None:
        self._upstreams = dict(upstreams)
        self._balancers = dict(balancers)
        self._breakers = dict(breakers or {}) or {
            name: CircuitBreaker(name=upstream.audience) for name, upstream in upstreams.items()
        }
        self._budgets = dict(budgets or {}) or {
            name: RetryBudget(name=upstream.audience) for name, upstream in upstreams.items()
        }
        self._live_timeouts = {
            # Live answers never end by themselves: only connecting and the headers have a
            # deadline, and the body may pause up to the read timeout (heartbeats come sooner).
            name: aiohttp.ClientTimeout(
                total=None,
                connect=upstream.timeout_seconds,
                sock_connect=upstream.timeout_seconds,
                sock_read=live_read_timeout_seconds,
            )
            for name, upstream in upstreams.items()
        }
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def upstreams(self) -> Mapping[str, Upstream]:
        return self._upstreams

    async def start(self) -> None:
        # Idle connections are dropped before the services' own keep-alive timeout
        # (uvicorn: 5 s) closes them: a request sent on a connection the server is
        # closing at that moment would fail, and a POST cannot be sent again.
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=4, ttl_dns_cache=10)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            trace_configs=_trace_configs(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _started(self) -> aiohttp.ClientSession:
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        return self._session

    async def _first_answer(
        self, *, upstream: str, repeatable: bool, attempt: Callable[[str, float], Awaitable[T]], total: bool = True
    ) -> T:
        """``attempt(url, timeout)`` on each instance in turn until one answers (see
        the module's docstring). ``total``: the route's timeout bounds the whole call."""
        target = self._upstreams[upstream]
        balancer, breaker, budget = self._balancers[upstream], self._breakers[upstream], self._budgets[upstream]
        try:
            candidates = await balancer.candidates()
        except DiscoveryUnavailable as e:
            raise UpstreamUnavailable(upstream) from e
        try:
            admission = breaker.admit()
        except CircuitOpen as e:
            raise UpstreamUnavailable(upstream, retry_after=e.retry_after) from e
        budget.first_attempt()
        failure: Exception | None = None
        with deadline_in(target.timeout_seconds if total else None):
            try:
                for number, instance in enumerate(candidates):
                    if number > 0 and not budget.try_retry():
                        break
                    try:
                        left = remaining(at_most=target.timeout_seconds)
                    except DeadlineExceeded as e:
                        raise UpstreamTimeout(upstream) from e
                    try:
                        result = await attempt(instance.url, left)
                    except aiohttp.ClientConnectorError as e:
                        balancer.failed(instance, refused=True)
                        failure = e
                        continue
                    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                        balancer.failed(instance)
                        if not repeatable:
                            raise UpstreamUnavailable(upstream) from e
                        failure = e
                        continue
                    except TimeoutError as e:
                        balancer.failed(instance)
                        raise UpstreamTimeout(upstream) from e
                    except aiohttp.ClientError as e:
                        balancer.failed(instance)
                        raise UpstreamUnavailable(upstream) from e
                    if getattr(result, "status", 200) in _GATEWAY_FAILURES:
                        balancer.failed(instance)
                        breaker.failed(admission=admission)
                    else:
                        balancer.succeeded(instance)
                        breaker.succeeded(admission=admission)
                    if getattr(result, "closing", False):
                        balancer.draining(instance)
                    return result
            except UpstreamFailed:
                breaker.failed(admission=admission)
                raise
            except BaseException:
                breaker.abandoned(admission=admission)
                raise
        breaker.failed(admission=admission)
        raise UpstreamUnavailable(upstream) from failure

    async def forward(
        self,
        *,
        upstream: str,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> UpstreamResponse:
        session = self._started()
        target = path + (f"?{query}" if query else "")

        async def attempt(url: str, seconds: float) -> UpstreamResponse:
            sent = {**headers, DEADLINE_HEADER: header_value(timeout=seconds)}
            async with session.request(
                method,
                url + target,
                headers=sent,
                data=body or None,
                timeout=aiohttp.ClientTimeout(total=seconds),
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                kept = {name: response.headers[name] for name in _RESPONSE_HEADERS if name in response.headers}
                return UpstreamResponse(status=response.status, headers=kept, body=payload, closing=_closing(response))

        repeatable = method in _REPEATABLE or (
            self._upstreams[upstream].idempotency_keys and _IDEMPOTENCY_KEY in headers
        )
        return await self._first_answer(upstream=upstream, repeatable=repeatable, attempt=attempt)

    async def open_stream(self, *, upstream: str, path: str, query: str, headers: dict[str, str]) -> UpstreamStream:
        """GET ``path`` and return as soon as the headers are in; the body follows."""
        session = self._started()
        target = path + (f"?{query}" if query else "")
        timeout = self._live_timeouts[upstream]

        async def attempt(url: str, _: float) -> UpstreamStream:
            response = await session.get(url + target, headers=headers, timeout=timeout, allow_redirects=False)
            kept = {name: response.headers[name] for name in _STREAM_HEADERS if name in response.headers}
            return UpstreamStream(status=response.status, headers=kept, _response=response)

        return await self._first_answer(upstream=upstream, repeatable=True, attempt=attempt, total=False)

    async def open_socket(self, *, upstream: str, path: str, headers: dict[str, str]) -> SocketOpening:
        """A WebSocket to ``path``; a handshake the upstream refuses comes back as its status."""
        session = self._started()
        target = self._upstreams[upstream]
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=target.timeout_seconds)

        async def attempt(url: str, _: float) -> SocketOpening:
            try:
                async with asyncio.timeout(target.timeout_seconds):
                    socket = await session.ws_connect(
                        url + path, headers=headers, timeout=timeout, max_msg_size=_MAX_MESSAGE_BYTES
                    )
            except aiohttp.WSServerHandshakeError as e:
                return SocketOpening(socket=None, refused_status=e.status)
            return SocketOpening(socket=UpstreamSocket(upstream=upstream, socket=socket))

        return await self._first_answer(upstream=upstream, repeatable=True, attempt=attempt, total=False)

    async def probe(self, *, upstream: str) -> None:
        """Raise unless some instance's health path answers 2xx within the timeout
        (all instances are asked at once: a silent one must not hide a healthy one)."""
        session = self._started()
        target = self._upstreams[upstream]
        timeout = aiohttp.ClientTimeout(total=target.timeout_seconds)

        async def ask(url: str) -> None:
            async with session.get(url + target.health_path, timeout=timeout) as response:
                await response.read()
                if response.status >= 300:
                    raise UpstreamUnavailable(f"{upstream} answered {response.status}")

        try:
            instances = await self._balancers[upstream].candidates()
        except DiscoveryUnavailable as e:
            raise UpstreamUnavailable(upstream) from e
        pending = {asyncio.ensure_future(ask(instance.url)) for instance in instances}
        failure: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for answer in done:
                    failure = answer.exception()
                    if failure is None:
                        return
        finally:
            for task in pending:
                task.cancel()
        raise UpstreamUnavailable(upstream) from failure

    async def get_json(self, *, upstream: str, path: str) -> dict[str, object]:
        """A JSON object the upstream serves (JWKS, its OpenAPI document). Only a
        failed call counts against the instance and the breaker: a 4xx is an answer."""
        session = self._started()

        async def attempt(url: str, seconds: float) -> UpstreamResponse:
            async with session.get(url + path, timeout=aiohttp.ClientTimeout(total=seconds)) as response:
                body = await response.read()
                return UpstreamResponse(status=response.status, headers={}, body=body, closing=_closing(response))

        answer = await self._first_answer(upstream=upstream, repeatable=True, attempt=attempt)
        try:
            document = orjson.loads(answer.body) if answer.status == 200 else None
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            raise UpstreamUnavailable(f"{upstream} answered {path} with {answer.status} and no JSON object")
        return document
