"""gRPC on grpc.aio, the same way in every service.

server side   create_server(): the standard health service, reflection, and an
              interceptor that sets the request id, refuses calls without a
              valid service token (UNAUTHENTICATED) before their request is
              decoded, and answers a request that does not decode with
              INVALID_ARGUMENT; health and reflection stay open.
client side   service_channel(): adds the caller's service token and the current
              request id to every call's metadata.
metrics       grpc_server_handled_total and grpc_server_handling_seconds per method
              served, grpc_client_* likewise per attempt made (go-grpc-prometheus's
              names, which dashboards know), labelled with the status's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram
from pydantic import AfterValidator

from interchange_common import lifecycle, tracing
from interchange_common.deadlines import adopt_timeout, remaining
from interchange_common.errors import ServiceAuthError, UndecodableRequest
from interchange_common.httpserver import serve_http
from interchange_common.requestctx import REQUEST_ID_HEADER, accept_request_id, outgoing_request_id, request_id_var
from interchange_common.resilience import CircuitBreaker, RetryBudget, retrying
from interchange_common.servicejwt import ServiceTokenIssuer, ServiceTokenVerifier

CLIENT_CALLS = Counter("rpc_client_calls_total", "gRPC calls made (each may take several attempts)", ["upstream"])
CLIENT_ATTEMPTS = Counter("rpc_client_attempts_total", "gRPC attempts sent, retries included", ["upstream"])
_METHOD_LABELS = ["grpc_service", "grpc_method"]
_GRPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SERVER_HANDLED = Counter("grpc_server_handled_total", "gRPC calls served, by status", [*_METHOD_LABELS, "grpc_code"])
SERVER_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time to serve a gRPC call (a stream: until it ends)",
    _METHOD_LABELS,
    buckets=_GRPC_BUCKETS,
)
CLIENT_HANDLED = Counter(
    "grpc_client_handled_total", "gRPC attempts made, by the status they ended with", [*_METHOD_LABELS, "grpc_code"]
)
CLIENT_HANDLING = Histogram(
    "grpc_client_handling_seconds",
    "Time from sending a gRPC attempt to its status (a stream: until it ends)",
    _METHOD_LABELS,
    buckets=_GRPC_BUCKETS,
)
_OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_UNDECODABLE_DETAILS = "request could not be decoded"
_log = logging.getLogger("interchange.rpc")


def _log_call(*, method: str, started: float, outcome: str) -> None:
    _log.info(
        "rpc",
        extra={"method": method, "outcome": outcome, "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
    )


# Each (metric, method, status)'s two series, kept: prometheus_client's labels()
# validates and locks on every call (as in asgi.accesslog). Bounded: our methods,
# gRPC's status codes.
_series: dict[tuple[Counter, str, str], tuple[Counter, Histogram]] = {}


def _observe(handled: Counter, handling: Histogram, *, method: str, seconds: float, code: str) -> None:
    key = (handled, method, code)
    series = _series.get(key)
    if series is None:
        service, _, name = method.lstrip("/").partition("/")  # "/pkg.Service/Method"
        series = _series[key] = (handled.labels(service, name, code), handling.labels(service, name))
    series[0].inc()
    series[1].observe(seconds)


def _served(
    context: grpc.aio.ServicerContext[Any, Any], *, method: str, started: float, error: BaseException | None = None
) -> None:
    code = _served_status(context, error)
    _observe(SERVER_HANDLED, SERVER_HANDLING, method=method, seconds=time.perf_counter() - started, code=code)


def _served_status(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The status a served call ended with: the one the handler set (abort, set_code),
    else OK; after an error, CANCELLED or DEADLINE_EXCEEDED for a call cut short (a
    stream may also be closed), and UNKNOWN (grpc's answer) for anything else."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        left = context.time_remaining()
        return "DEADLINE_EXCEEDED" if left is not None and left <= 0 else "CANCELLED"
    code: grpc.StatusCode | None = context.code()
    if code is not None:
        return code.name
    return "OK" if error is None else "UNKNOWN"


def _called(*, method: str, started: float, error: BaseException | None = None) -> None:
    code = _called_status(error)
    _observe(CLIENT_HANDLED, CLIENT_HANDLING, method=method, seconds=time.perf_counter() - started, code=code)


def _called_status(error: BaseException | None) -> str:
    """The status a unary attempt ended with, as its caller learns it."""
    if error is None:
        return "OK"
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


class ServiceAuthInterceptor(grpc.aio.ServerInterceptor):
    """Request id from metadata, service token required (checked before the request is
    decoded), undecodable requests refused, one log line per call."""

    def __init__(self, *, verifier: ServiceTokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        handler = _decoding_checked(handler)
        method: str = handler_call_details.method
        if method.startswith(_OPEN_METHOD_PREFIXES):
            return handler
        metadata = {key: _text(value) for key, value in handler_call_details.invocation_metadata or ()}
        request_id = accept_request_id(offered=metadata.get(REQUEST_ID_HEADER))
        auth_error: str | None = None
        try:
            self._verifier.verify_authorization(header=metadata.get("authorization"))
        except ServiceAuthError as e:
            auth_error = str(e)
        return _wrap(handler, method=method, request_id=request_id, auth_error=auth_error)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _decoding_checked(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The same method, except that request bytes which do not decode end the call
    with INVALID_ARGUMENT and _UNDECODABLE_DETAILS.

    Left to itself grpc.aio decodes a unary request before any handler runs, so no
    handler can catch the failure, and answers UNKNOWN with the exception's class and
    text ("Unexpected <class '...DecodeError'>: ..."), ahead of the token check. So a
    unary request reaches the handler as bytes and is decoded inside it (after the
    token check, see _wrap); a streamed request is decoded as the handler reads it,
    and the failure is caught around the handler. Handlers are those of grpc.aio
    servicers, coroutine or async generator functions; any other kind is left as is.
    """
    decode = handler.request_deserializer
    behaviour: Any = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    if decode is None or not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
        return handler

    def strict(raw: bytes) -> Any:
        try:
            return decode(raw)
        except DecodeError as e:
            raise UndecodableRequest(_UNDECODABLE_DETAILS) from e

    def as_is(requests: Any) -> Any:
        return requests

    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(behaviour, prepare=strict), response_serializer=serialize
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _refusing_undecodable(behaviour, prepare=strict), response_serializer=serialize
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _refusing_undecodable(behaviour, prepare=as_is), request_deserializer=strict, response_serializer=serialize
        )
    return grpc.stream_stream_rpc_method_handler(
        _refusing_undecodable(behaviour, prepare=as_is), request_deserializer=strict, response_serializer=serialize
    )


def _refusing_undecodable(inner: Any, *, prepare: Callable[[Any], Any]) -> Any:
    """``inner`` given ``prepare(request)``; an UndecodableRequest on the way ends the
    call with INVALID_ARGUMENT. A coroutine function stays one, an async generator
    function stays one: grpc.aio treats the two differently."""

    async def refuse(context: Context) -> NoReturn:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _UNDECODABLE_DETAILS)
        raise AssertionError("abort returned")  # abort always raises; this satisfies NoReturn

    if inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for item in inner(prepare(request), context):
                    yield item
            except UndecodableRequest:
                await refuse(context)

        return stream

    async def call(request: Any, context: Context) -> Any:
        try:
            return await inner(prepare(request), context)
        except UndecodableRequest:
            await refuse(context)

    return call


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], *, method: str, request_id: str, auth_error: str | None
) -> grpc.RpcMethodHandler[Any, Any]:
    # Each call runs in its own task, with its own copy of the context: setting the
    # request id and deadline here cannot leak into another call: nothing to reset.
    async def begin(context: grpc.aio.ServicerContext[Any, Any]) -> float:
        request_id_var.set(request_id)
        adopt_timeout(context.time_remaining())
        started = time.perf_counter()
        if auth_error is not None:
            _log_call(method=method, started=started, outcome="UNAUTHENTICATED")
            seconds = time.perf_counter() - started
            _observe(SERVER_HANDLED, SERVER_HANDLING, method=method, seconds=seconds, code="UNAUTHENTICATED")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, auth_error)
        return started

    if handler.unary_unary is not None:
        inner_unary: Any = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = await begin(context)
            try:
                response = await inner_unary(request, context)
            except BaseException as e:
                _log_call(method=method, started=started, outcome=type(e).__name__)
                _served(context, method=method, started=started, error=e)
                raise
            _log_call(method=method, started=started, outcome="OK")
            _served(context, method=method, started=started)
            return response

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_stream: Any = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = await begin(context)
            try:
                async for item in inner_stream(request, context):
                    yield item
            except BaseException as e:
                _log_call(method=method, started=started, outcome=type(e).__name__)
                _served(context, method=method, started=started, error=e)
                raise
            _log_call(method=method, started=started, outcome="OK")
            _served(context, method=method, started=started)

        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    # Client- and bidi-streaming methods are not used yet; refuse rather than skip auth.
    raise ServiceAuthError(f"{method}: streaming requests are not supported by the auth interceptor")


def create_server(
    *,
    verifier: ServiceTokenVerifier,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A server with our services (added by ``register``), health and reflection.

    The caller binds the port (``server.add_insecure_port``) and starts it.
    """
    server = grpc.aio.server(
        interceptors=[*tracing.grpc_server_interceptors(), ServiceAuthInterceptor(verifier=verifier)],
        options=_CONNECTION_AGE,
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    return server, health_servicer


async def mark_serving(*, health_servicer: health.aio.HealthServicer, service_names: Sequence[str]) -> None:
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


class _OutgoingMetadata:
    """Adds the service token and the request id to a call's metadata."""

    def __init__(self, *, issuer: ServiceTokenIssuer, audience: str) -> None:
        self._issuer = issuer
        self._audience = audience

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["authorization"] = self._issuer.authorization_for(audience=self._audience)
        metadata[REQUEST_ID_HEADER] = outgoing_request_id()
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


# grpc.aio files each interceptor under one call kind only (an if/elif on its
# type), so unary and server-streaming calls need an interceptor each.
class _UnaryUnaryMetadata(_OutgoingMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        started = time.perf_counter()
        call = await continuation(self._details(client_call_details), request)
        # Awaited here to time it to the end; the caller's own await then has the
        # answer (or the same error) at once.
        method = _text(client_call_details.method)
        try:
            await call
        except BaseException as e:
            _called(method=method, started=started, error=e)
            raise
        _called(method=method, started=started)
        return call


class _UnaryStreamMetadata(_OutgoingMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        started = time.perf_counter()
        call = await continuation(self._details(client_call_details), request)
        call.add_done_callback(_stream_ended(method=_text(client_call_details.method), started=started))
        return call


# Tasks observing how a stream ended, kept until done (the loop holds tasks weakly).
_ending: set[asyncio.Task[None]] = set()


def _stream_ended(*, method: str, started: float) -> Callable[[Any], None]:
    """A done callback that observes a stream however it ended: read to its end,
    failed, cancelled or dropped by its caller. grpc.aio tells the status to a
    coroutine only, so a task asks for it."""
    loop = asyncio.get_running_loop()

    def ended(call: Any) -> None:
        seconds = time.perf_counter() - started
        if loop.is_closed():
            return

        async def observe() -> None:
            code: grpc.StatusCode = await call.code()
            _observe(CLIENT_HANDLED, CLIENT_HANDLING, method=method, seconds=seconds, code=code.name)

        task = loop.create_task(observe())
        _ending.add(task)
        task.add_done_callback(_ending.discard)

    return ended


def service_interceptors(*, issuer: ServiceTokenIssuer, audience: str) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that add a service token for ``audience`` and the request id,
    and observe each attempt (grpc_client_handled_total, grpc_client_handling_seconds)."""
    return [
        _UnaryUnaryMetadata(issuer=issuer, audience=audience),
        _UnaryStreamMetadata(issuer=issuer, audience=audience),
    ]


def _one_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url.strip())
    if parts.scheme != "grpc" or not parts.hostname or parts.port is None or parts.path.strip("/"):
        raise ValueError(f"expected grpc://host:port, got {url!r}")
    return parts.hostname, parts.port


def grpc_target(url: str) -> str:
    """``grpc://host:port`` → ``host:port``, the form grpc wants; a comma-separated
    list of instances (IP addresses) → ``ipv4:a:p,b:p`` (or ``ipv6:``), for grpc's
    round-robin balancing. One name stands for every address DNS gives for it
    (compose's service names, Consul's ``<service>.service.consul``). Addresses of
    gRPC servers are written as URLs so that they read (and are rewritten by tools
    such as devstack) like every other address in the configuration."""
    hosts = [_one_target(part) for part in url.split(",") if part.strip()]
    if not hosts:
        raise ValueError(f"expected grpc://host:port, got {url!r}")
    if len(hosts) == 1:
        host, port = hosts[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 keeps its brackets
    try:
        versions = {ipaddress.ip_address(host).version for host, _ in hosts}
    except ValueError as e:
        raise ValueError(
            f"list several instances by IP address, or give one name that resolves to all of them: {url!r}"
        ) from e
    if versions == {4}:
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in hosts)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in hosts)
    raise ValueError(f"list IPv4 or IPv6 addresses, not both: {url!r}")


def _checked_grpc_url(url: str) -> str:
    grpc_target(url)
    return url


GrpcUrl = Annotated[str, AfterValidator(_checked_grpc_url)]


# Every address the target resolves to gets a connection, calls go round-robin over
# those whose server says SERVING on the standard health service (grpc watches it:
# an instance that drains or stops drops out at once), and a refused connection is
# retried in the background with grpc's own backoff, capped at 2 s instead of grpc's
# 120 s: an instance back from a restart takes calls again within 2 s, before a
# rolling restart stops the next one. An instance that comes back at a new address (a
# Swarm task, a pod) is found by resolving the name again, which grpc does when a
# connection ends, at most once a second here instead of grpc's once in 30 s: else
# the next instance of a rolling update could stop before the new one is known.
_BALANCED = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})
_RECONNECT_BACKOFF = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]
_RESOLVE_AGAIN = [("grpc.dns_min_time_between_resolutions_ms", 1000)]
# A client resolves the name only when a connection ends: one that resolved while some
# instances were not up yet (a Swarm task starting, a pod) would never call them, and
# would fail outright when the only ones it knows drain. So servers end every
# connection after about 30 s (grpc's GOAWAY: calls in flight and open streams finish
# on it, new calls go on a new connection, after the client has resolved the name
# again), the way gRPC's own guidance on DNS balancing has it.
_CONNECTION_AGE = [("grpc.max_connection_age_ms", 30_000)]


def service_channel(*, target: str, issuer: ServiceTokenIssuer, audience: str) -> grpc.aio.Channel:
    """A channel whose calls carry a service token for ``audience`` and the request
    id, balanced over every instance ``target`` names (see grpc_target)."""
    return grpc.aio.insecure_channel(
        target,
        options=[("grpc.service_config", _BALANCED), *_RECONNECT_BACKOFF, *_RESOLVE_AGAIN],
        interceptors=[*service_interceptors(issuer=issuer, audience=audience), *tracing.grpc_client_interceptors()],
    )


Context = grpc.aio.ServicerContext[Any, Any]
Abort = Callable[[Context, Exception], Awaitable[NoReturn]]
_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply")
_Answer = TypeVar("_Answer")
UnaryMethod = Callable[[_Servicer, _Request, Context], Awaitable[_Reply]]


def status_codes(
    *, errors: tuple[type[Exception], ...], abort: Abort
) -> Callable[[UnaryMethod[_Servicer, _Request, _Reply]], UnaryMethod[_Servicer, _Request, _Reply]]:
    """A decorator for unary servicer methods: ``errors`` become status codes through
    ``abort``, the one place each service maps its errors to gRPC."""

    def decorate(method: UnaryMethod[_Servicer, _Request, _Reply]) -> UnaryMethod[_Servicer, _Request, _Reply]:
        @functools.wraps(method)
        async def handle(self: _Servicer, request: _Request, context: Context) -> _Reply:
            try:
                return await method(self, request, context)
            except errors as e:
                await abort(context, e)

        return handle

    return decorate


async def serve_with_http(
    *,
    verifier: ServiceTokenVerifier,
    service_name: str,
    register: Callable[[grpc.aio.Server], None],
    http_app: Any,
    host: str,
    http_port: int,
    grpc_port: int,
    grace_seconds: float = 5.0,
) -> None:
    """Serve the gRPC service ``register`` adds (see create_server) and the HTTP app
    until SIGTERM or SIGINT. When the drain begins the gRPC health service says
    NOT_SERVING (balanced clients stop sending), HTTP drains, then gRPC gets its
    grace period."""
    grpc_server, health_servicer = create_server(verifier=verifier, service_names=[service_name], register=register)
    grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    await grpc_server.start()
    await mark_serving(health_servicer=health_servicer, service_names=[service_name])
    lifecycle.current().on_drain.append(health_servicer.enter_graceful_shutdown)
    _log.info("serving", extra={"http_port": http_port, "grpc_port": grpc_port})
    try:
        await serve_http(app=http_app, host=host, port=http_port)
    finally:
        await grpc_server.stop(grace=grace_seconds)


async def call_within(
    method: Callable[..., Awaitable[_Answer]],
    request: object,
    *,
    deadline: float,
    retry_on: frozenset[grpc.StatusCode],
    attempts: int = 3,
    budget: RetryBudget | None = None,
    breaker: CircuitBreaker | None = None,
) -> _Answer:
    """Call a unary gRPC method, retrying the given status codes (resilience.retrying:
    full jitter, within ``budget``), all within one deadline: each attempt gets what
    is left of it, and no wait ends past it, so the caller waits at most ``deadline``
    seconds; the deadline of the request being served (interchange_common.deadlines)
    shortens it. With a ``breaker`` the whole call is one verdict: CircuitOpen while it
    is open, and only upstream failures (``failed_upstream``) count against it.
    Raises the last AioRpcError, or TimeoutError when no time is left."""
    deadline = remaining(at_most=deadline)
    started = time.monotonic()
    upstream = breaker.name if breaker is not None else budget.name if budget is not None else "-"
    CLIENT_CALLS.labels(upstream=upstream).inc()

    def retried(error: BaseException) -> bool:
        return isinstance(error, grpc.aio.AioRpcError) and error.code() in retry_on

    guard = breaker.guard(is_failure=failed_upstream) if breaker is not None else contextlib.nullcontext()
    with guard:
        async for attempt in retrying(retryable=retried, attempts=attempts, within=deadline, budget=budget):
            with attempt:
                left = deadline - (time.monotonic() - started)
                if left <= 0:
                    raise TimeoutError(f"no answer within {deadline:.3f} s")
                CLIENT_ATTEMPTS.labels(upstream=upstream).inc()
                return await method(request, timeout=left)
    raise AssertionError("tenacity retries or raises")


_UPSTREAM_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


def failed_upstream(error: BaseException) -> bool:
    """The upstream failed (as opposed to answering "not found", "conflict", …): what
    counts against its circuit breaker."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in _UPSTREAM_FAILURES
    return isinstance(error, TimeoutError)
