"""OpenTelemetry traces: one order followed across every service, the asynchronous
hops included.

Configured the standard way, by the ``OTEL_*`` variables:

    OTEL_SDK_DISABLED=true          tracing off: no provider, no instrumentation at all
    OTEL_EXPORTER_OTLP_ENDPOINT     where spans go (OTLP over HTTP/protobuf); tracing is
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  on when one of these is set (or
                                    OTEL_TRACES_EXPORTER=otlp, to the SDK's default
                                    endpoint): a service with nowhere to send spans
                                    makes none; OTEL_TRACES_EXPORTER=none turns it off
    OTEL_TRACES_SAMPLER, _ARG       the SDK's samplers; unset, parent-based with a
                                    trace-id ratio of ``DEFAULT_RATIO`` (ARG sets it)
    OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME   as the SDK reads them

Where traces start. Whatever the sampler, a span with no parent is recorded only where
work enters the system: a request (SERVER) or a message (CONSUMER), or batched work
that links to a recorded span (see below). A background loop's own queries (a relay
polling its table, a sequencer's pass) start no trace: they would bury the traces
worth reading under thousands of one-span ones.

The well-kept instrumentations do the hops they know: ASGI (every HTTP server),
aiohttp (the gateway's calls), grpc (clients and servers, as interceptors), asyncpg
(every query, SQLAlchemy's included), redis and aio-pika (publishing). By hand, the
hops no library knows, following OpenTelemetry's messaging conventions:

    stored context   what an event or a queued message is about to cause later is
                     written down with it: the W3C ``traceparent`` of the span that
                     created it, next to its correlation id (event metadata, outbox
                     rows, notification rows)
    one message      work done for one stored message is its creator's child (the
                     relay's publish, a consumer's processing, one mail, one live
                     push): the trace of an order holds everything it caused
    a batch          work done once for many (a group commit, a projection's
                     transaction) is a span of its own with a link to each member's
                     span: no member's trace owns it, every member's trace reaches it

Log lines carry ``trace_id`` and ``span_id`` while a recorded span is current, and
every HTTP answer carries ``traceparent``, so that a user can find the trace of a
request (``python -m devstack trace``, or Jaeger under compose).
"""

import functools
import importlib.util
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.propagators import ResponsePropagator, set_global_response_propagator
from opentelemetry.propagators import textmap
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, Span, Status, StatusCode
from opentelemetry.trace import SpanKind as SpanKind  # for the services' own spans
from opentelemetry.util.types import Attributes

DEFAULT_RATIO = 0.1
TRACEPARENT = "traceparent"
# Health probes and scrapes come every few seconds from every prober: never traced.
_EXCLUDED_URLS = "/health,/health/live,/metrics"

_provider: TracerProvider | None = None


class EntrySampler(Sampler):
    """``inner`` for spans with a parent and for the spans where work enters; every
    other root (CLIENT, PRODUCER, INTERNAL) is dropped unless it links to a
    recorded span: batched work is kept with the work it serves."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind not in (SpanKind.SERVER, SpanKind.CONSUMER):
            if not any(link.context.trace_flags.sampled for link in links or ()):
                return SamplingResult(Decision.DROP, trace_state=trace_state)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes=attributes, trace_state=trace_state)
        return self._inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"EntrySampler{{{self._inner.get_description()}}}"


def default_sampler() -> Sampler:
    """OTEL_TRACES_SAMPLER's sampler when it is set, else parent-based with a
    trace-id ratio (OTEL_TRACES_SAMPLER_ARG, default ``DEFAULT_RATIO``)."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return _get_from_env_or_default()
    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", DEFAULT_RATIO))
    except ValueError:
        ratio = DEFAULT_RATIO
    return ParentBased(TraceIdRatioBased(min(max(ratio, 0.0), 1.0)))


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in ("", "otlp"):
        return False  # none, or an exporter these images do not ship
    return bool(
        exporter
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


class _TraceparentResponse(ResponsePropagator):
    """Every HTTP answer says which trace it belongs to, in the request header's own
    format (``traceparent``), and lets browsers' scripts read it."""

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: Any = None,
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid or setter is None:
            return
        flags = "01" if span_context.trace_flags.sampled else "00"
        value = f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags}"
        setter.set(carrier, TRACEPARENT, value)
        setter.set(carrier, "Access-Control-Expose-Headers", TRACEPARENT)


def configure_tracing(*, service: str, version: str) -> bool:
    """Set the process's tracer provider and instrument the libraries it uses, when
    the environment asks for traces; whether it did."""
    global _provider
    if not wanted():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create(
        {"service.name": service, "service.version": version, "service.instance.id": f"{service}-{os.getpid()}"}
    )
    provider = TracerProvider(resource=resource, sampler=EntrySampler(default_sampler()))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    set_global_response_propagator(_TraceparentResponse())
    _provider = provider
    _instrument_libraries(provider)
    return True


def _instrument_libraries(provider: TracerProvider) -> None:
    """asyncpg, redis and aio-pika, where the service has them (the extras it installs)."""
    if importlib.util.find_spec("opentelemetry.instrumentation.asyncpg") is not None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(tracer_provider=provider)
    if importlib.util.find_spec("opentelemetry.instrumentation.redis") is not None:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument(tracer_provider=provider)
    if importlib.util.find_spec("opentelemetry.instrumentation.aio_pika") is not None:
        from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

        AioPikaInstrumentor().instrument(tracer_provider=provider)


def enabled() -> bool:
    return _provider is not None


def shutdown() -> None:
    """Send what is still buffered, then stop (at the end of the process)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


# Stored context ---------------------------------------------------------------------


def current_traceparent() -> str | None:
    """The current span as a ``traceparent`` to store with what it creates; None
    when no span is current (or tracing is off)."""
    if _provider is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_of(traceparent: object) -> Context | None:
    """The context a stored ``traceparent`` names (None: nothing usable stored)."""
    if isinstance(traceparent, bytes):  # an AMQP header may come back as bytes
        traceparent = traceparent.decode(errors="replace")
    if _provider is None or not isinstance(traceparent, str) or not traceparent:
        return None
    extracted = propagate.extract({TRACEPARENT: traceparent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def links_to(traceparents: Iterable[object]) -> list[Link]:
    """One link per distinct stored context that names a span (for a span serving a
    batch); ``traceparents`` is not even read while tracing is off."""
    if _provider is None:
        return []
    links = []
    for traceparent in dict.fromkeys(traceparents):
        found = context_of(traceparent)
        if found is not None:
            links.append(Link(trace.get_current_span(found).get_span_context()))
    return links


@functools.cache
def _ours(provider: TracerProvider) -> trace.Tracer:
    """The tracer of our own spans, made once (get_tracer builds a new one each call)."""
    return provider.get_tracer("interchange")


@contextmanager
def continued(traceparent: object) -> Iterator[None]:
    """Within the block, the stored context is the current one (nothing changes when
    nothing usable was stored)."""
    found = context_of(traceparent)
    if found is None:
        yield
        return
    token = otel_context.attach(found)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: object = None,
    links: Sequence[Link] = (),
    root: bool = False,
    attributes: Attributes = None,
) -> Iterator[Span]:
    """A span of ours: the child of the stored ``parent`` when one is given, a new root
    when ``root`` (batched work: give ``links``), else of the current span. Costs
    nothing but a lookup while tracing is off."""
    if _provider is None:
        yield trace.INVALID_SPAN
        return
    if parent is not None:
        start_in = context_of(parent) or (Context() if root else None)
    else:
        start_in = Context() if root else None
    with _ours(_provider).start_as_current_span(
        name, context=start_in, kind=kind, links=links, attributes=attributes
    ) as current:
        yield current


@contextmanager
def continued_span(
    name: str, *, parent: object, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None
) -> Iterator[Span]:
    """A span for work done later for one stored message: the child of the span that
    stored it (``parent``, a ``traceparent``). None is made when nothing usable was
    stored: work that no trace asked for starts none."""
    found = context_of(parent)
    if _provider is None or found is None:
        yield trace.INVALID_SPAN
        return
    with _ours(_provider).start_as_current_span(name, context=found, kind=kind, attributes=attributes) as current:
        yield current


def mark_failed(span: Span, error: BaseException) -> None:
    """Record on ``span`` that its work failed with ``error`` (which was handled)."""
    if span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def log_fields() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span while it is recorded."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.trace_flags.sampled or not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


# Instrumentation the services wire in ------------------------------------------------


def asgi_app(app: Any) -> Any:
    """``app`` inside OpenTelemetry's ASGI middleware (a SERVER span per request and
    WebSocket, the caller's ``traceparent`` honoured, ours on the answer), or ``app``
    itself while tracing is off."""
    if _provider is None:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app,
        excluded_urls=os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", _EXCLUDED_URLS),
        tracer_provider=_provider,
        exclude_spans=["receive", "send"],
        http_capture_headers_server_response=["x-request-id"],
    )


def grpc_server_interceptors() -> list[Any]:
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    # Not the health service: its Watch streams with context.write(), which the aio
    # interceptor (0.66b1) cannot wrap (it expects an async generator); nor
    # reflection. Neither is part of any request's work.
    ours = filters.negate(filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection")))
    return [aio_server_interceptor(tracer_provider=_provider, filter_=ours)]


def grpc_client_interceptors() -> list[Any]:
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=_provider))


def name_server_span(*, method: str, route: str) -> None:
    """Name the current SERVER span by its route template (``POST /orders/{order_id}``),
    once routing has found it: the path itself would make a name per order."""
    current = trace.get_current_span()
    if current.is_recording():
        current.update_name(f"{method} {route}")
        current.set_attribute("http.route", route)
