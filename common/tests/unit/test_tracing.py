"""interchange_common.tracing: where traces start, stored context, log fields, the
traceparent answer. Spans are caught by the SDK's in-memory exporter."""

import logging
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from interchange_common import tracing
from interchange_common.logging import configure_logging

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.EntrySampler(ParentBased(ALWAYS_ON)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    yield exporter
    provider.shutdown()


def _context(flags: int) -> SpanContext:
    return SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=TraceFlags(flags))


@pytest.mark.parametrize(
    ("kind", "links", "decision"),
    [
        (SpanKind.SERVER, (), Decision.RECORD_AND_SAMPLE),  # a request: where traces start
        (SpanKind.CONSUMER, (), Decision.RECORD_AND_SAMPLE),  # a message
        (SpanKind.CLIENT, (), Decision.DROP),  # a background loop's query
        (SpanKind.INTERNAL, (), Decision.DROP),
        (SpanKind.INTERNAL, (Link(_context(TraceFlags.SAMPLED)),), Decision.RECORD_AND_SAMPLE),  # a batch
        (SpanKind.INTERNAL, (Link(_context(TraceFlags.DEFAULT)),), Decision.DROP),
    ],
)
def test_a_root_span_is_recorded_only_where_work_enters(kind, links, decision):
    sampler = tracing.EntrySampler(ParentBased(ALWAYS_ON))
    assert sampler.should_sample(None, 7, "name", kind=kind, links=links).decision == decision


def test_a_child_follows_its_parent_whatever_its_kind():
    sampler = tracing.EntrySampler(ParentBased(ALWAYS_ON))
    for flags, decision in ((TraceFlags.SAMPLED, Decision.RECORD_AND_SAMPLE), (TraceFlags.DEFAULT, Decision.DROP)):
        parent = trace.set_span_in_context(NonRecordingSpan(_context(flags)), Context())
        assert sampler.should_sample(parent, 7, "q", kind=SpanKind.CLIENT).decision == decision


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "console"}, False),
    ],
)
def test_tracing_is_on_only_when_the_environment_names_where_spans_go(environ, wanted):
    assert tracing.wanted(environ) is wanted


def test_the_default_sampler_is_parent_based_with_the_ratio_from_the_environment(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert "TraceIdRatioBased{0.25}" in tracing.default_sampler().get_description()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "nonsense")
    assert f"TraceIdRatioBased{{{tracing.DEFAULT_RATIO}}}" in tracing.default_sampler().get_description()


def test_work_for_a_stored_message_continues_the_trace_that_stored_it(spans):
    with tracing.span("append", kind=SpanKind.SERVER) as creator:
        stored = tracing.current_traceparent()
    assert stored is not None
    with tracing.continued_span("send mail", parent=stored, kind=SpanKind.CLIENT):
        pass
    mail = next(span for span in spans.get_finished_spans() if span.name == "send mail")
    assert mail.parent is not None
    assert mail.parent.span_id == creator.get_span_context().span_id
    assert mail.context.trace_id == creator.get_span_context().trace_id


@pytest.mark.parametrize("stored", [None, "", "-", "garbage", b"-", 42])
def test_nothing_usable_stored_makes_no_span(spans, stored):
    with tracing.continued_span("send mail", parent=stored) as current:
        assert not current.is_recording()
    assert spans.get_finished_spans() == ()


def test_an_unsampled_stored_context_makes_no_recorded_span(spans):
    with tracing.continued_span("send mail", parent=NOT_SAMPLED):
        pass
    assert spans.get_finished_spans() == ()


def test_a_batch_is_a_root_that_links_to_each_member(spans):
    links = tracing.links_to([SAMPLED, None, "junk"])
    with tracing.span("a request", kind=SpanKind.SERVER), tracing.span("append group", root=True, links=links):
        pass
    group = next(span for span in spans.get_finished_spans() if span.name == "append group")
    assert group.parent is None
    assert [link.context.span_id for link in group.links] == [0xB7AD6B7169203331]


def test_a_log_line_carries_the_ids_of_a_recorded_span_only(spans, capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(service="order-service", level="info")
        log = logging.getLogger("interchange.test")
        with tracing.span("a request", kind=SpanKind.SERVER) as current:
            log.info("inside")
        log.info("outside")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    inside, outside = (orjson.loads(line) for line in capsys.readouterr().out.splitlines())
    assert inside["trace_id"] == f"{current.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{current.get_span_context().span_id:016x}"
    assert "trace_id" not in outside


def test_an_answer_carries_the_traceparent_of_its_span(spans):
    headers: dict[str, str] = {}

    class Setter:
        def set(self, carrier: dict[str, str], key: str, value: str) -> None:
            carrier[key] = value

    with tracing.span("a request", kind=SpanKind.SERVER) as current:
        tracing._TraceparentResponse().inject(headers, setter=Setter())
    context = current.get_span_context()
    assert headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    assert headers["Access-Control-Expose-Headers"] == "traceparent"


def test_while_off_nothing_is_made(monkeypatch):
    monkeypatch.setattr(tracing, "_provider", None)
    assert tracing.current_traceparent() is None
    assert tracing.context_of(SAMPLED) is None
    assert tracing.grpc_server_interceptors() == []
    sentinel = object()
    assert tracing.asgi_app(sentinel) is sentinel
