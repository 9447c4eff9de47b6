"""devstack.otlp: the receiver takes what OpenTelemetry's own OTLP/HTTP exporter sends
(over a real socket), and a trace is put together across links and printed."""

import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Tracer

from devstack.otlp import OtlpReceiver, connected, fetch_spans, find_trace_id, read_spans_file, recent, render
from devstack.testing import free_port


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[OtlpReceiver]:
    running = OtlpReceiver(port=free_port(), spans_file=tmp_path / "traces.jsonl")
    running.start()
    yield running
    running.stop()


def _tracer(receiver: OtlpReceiver, service: str) -> tuple[TracerProvider, Tracer]:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")))
    return provider, provider.get_tracer("test")


def test_spans_sent_by_the_real_exporter_come_back_as_one_trace_with_its_linked_batch(receiver):
    gateway, gateway_tracer = _tracer(receiver, "gateway")
    store, store_tracer = _tracer(receiver, "event-store")
    with gateway_tracer.start_as_current_span("POST /api/orders", kind=SpanKind.SERVER) as request:
        request.set_attribute("http.response.header.x_request_id", ["req-42"])
        with gateway_tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as call:
            pass
    with store_tracer.start_as_current_span("append group", context=None, links=[Link(call.get_span_context())]):
        pass
    gateway.shutdown()
    store.shutdown()

    spans = receiver.spans()
    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert {(s.service, s.name, s.kind) for s in spans} == {
        ("gateway", "POST /api/orders", "server"),
        ("gateway", "POST", "client"),
        ("event-store", "append group", "internal"),
    }
    assert find_trace_id(key="req-42", spans=spans) == trace_id
    assert find_trace_id(key=f"00-{trace_id}-{'1' * 16}-01", spans=spans) == trace_id
    assert find_trace_id(key="nobody", spans=spans) is None

    trace = connected(trace_id=trace_id, spans=spans)
    assert [s.name for s in trace.spans] == ["POST /api/orders", "POST"]
    assert [s.name for s in trace.linked] == ["append group"]
    assert trace.orphans() == []
    printed = render(trace)
    assert "gateway: POST /api/orders [server]" in printed
    assert "\n    gateway: POST [client]" in printed  # indented under its parent
    assert "linked trace" in printed
    assert recent(spans) == [f"{trace_id}  gateway: POST /api/orders  {trace.spans[0].duration_ms:.1f} ms"]
    # The same, from the file and over the API.
    assert read_spans_file(receiver.spans_file) == spans
    assert fetch_spans(receiver.url) == spans


def test_a_span_whose_parent_never_came_is_an_orphan(receiver):
    provider, tracer = _tracer(receiver, "order-service")
    with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child") as child:
        pass
    provider.shutdown()
    spans = [s for s in receiver.spans() if s.name == "child"]
    trace = connected(trace_id=f"{child.get_span_context().trace_id:032x}", spans=spans)
    assert [s.name for s in trace.orphans()] == ["child"]


def test_a_gzipped_export_is_taken_and_anything_else_refused(receiver):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "user-service"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("test").start_as_current_span("GetUser"):
        pass
    body = gzip.compress(encode_spans(memory.get_finished_spans()).SerializeToString())
    sent = httpx.post(
        f"{receiver.url}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert sent.status_code == 200
    assert [s.name for s in receiver.spans()] == ["GetUser"]

    garbage = httpx.post(
        f"{receiver.url}/v1/traces", content=b"\xff\x00not protobuf", headers={"Content-Type": "application/x-protobuf"}
    )
    assert garbage.status_code == 400
    assert [s.name for s in receiver.spans()] == ["GetUser"]  # nothing kept from it
