"""A local OTLP receiver for traces: what the OpenTelemetry Collector and Jaeger are
under compose, for native runs and for the tests.

It takes OTLP over HTTP (``POST /v1/traces``, protobuf, gzip or not), the real
``ExportTraceServiceRequest`` parsed with the OpenTelemetry project's own protobufs
(``python -m devstack.otlp`` runs one on its own: the container tests' receiver),
keeps every span as a ``SpanRecord``, and optionally appends each as a JSON line to a
file (``.run/traces.jsonl`` under ``make up``), which ``python -m devstack trace``
reads. ``GET /api/spans`` (optionally ``?trace_id=…``) hands them back as JSON: how
the tests read spans from a receiver running in a container.

    Trace       the spans of one trace, a tree by parent, with the traces that link
                into it or that it links to (``connected``)
    render      a trace as an indented tree with services and durations
"""

import argparse
import gzip
import http.server
import threading
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from devstack.errors import DevstackError

_KINDS = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
_MAX_BODY = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: str
    span_id: str


@dataclass(frozen=True, slots=True)
class SpanRecord:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root
    name: str
    kind: str  # server, client, producer, consumer, internal
    service: str  # the resource's service.name
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[SpanLink, ...] = ()
    error: bool = False

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SpanRecord":
        return cls(**{**data, "links": tuple(SpanLink(**link) for link in data.get("links", ()))})


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind is not None else None


def decode(body: bytes) -> list[SpanRecord]:
    """The spans of one OTLP/HTTP protobuf export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    records = []
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=_KINDS.get(span.kind, "internal"),
                        service=service,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={item.key: _value(item.value) for item in span.attributes},
                        links=tuple(
                            SpanLink(trace_id=link.trace_id.hex(), span_id=link.span_id.hex()) for link in span.links
                        ),
                        error=span.status.code == span.status.STATUS_CODE_ERROR,
                    )
                )
    return records


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def do_POST(self) -> None:  # the standard library's hook name
        if urlsplit(self.path).path != "/v1/traces":
            self._answer(404, b"", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY or "json" in (self.headers.get("Content-Type") or ""):
            self._answer(415 if length <= _MAX_BODY else 413, b"OTLP/HTTP protobuf only", "text/plain")
            return
        body = self.rfile.read(length)
        try:
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            records = decode(body)
        except Exception:  # a body that is not an export request: the sender's error
            self._answer(400, b"not an OTLP ExportTraceServiceRequest", "text/plain")
            return
        self.server.keep(records)
        self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def do_GET(self) -> None:  # the standard library's hook name
        parts = urlsplit(self.path)
        if parts.path != "/api/spans":
            self._answer(404, b"", "text/plain")
            return
        wanted = parse_qs(parts.query).get("trace_id")
        spans = [span.as_json() for span in self.server.spans() if wanted is None or span.trace_id in wanted]
        self._answer(200, orjson.dumps(spans), "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the standard library's signature
        """Quiet: a line per export would drown the stack's own logs."""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, keep: Callable[[list[SpanRecord]], None]) -> None:
        super().__init__(address, _Handler)
        self._keep = keep
        self._lock = threading.Lock()
        self._spans: list[SpanRecord] = []

    def keep(self, records: list[SpanRecord]) -> None:
        with self._lock:
            self._spans.extend(records)
        self._keep(records)

    def spans(self) -> list[SpanRecord]:
        with self._lock:
            return list(self._spans)


class OtlpReceiver:
    """Receives spans on ``host:port`` in a thread of its own until ``stop``."""

    def __init__(self, *, port: int, host: str = "127.0.0.1", spans_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.spans_file = spans_file
        self._write_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT says to reach it."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self.spans_file is not None:
            self.spans_file.parent.mkdir(parents=True, exist_ok=True)
            self.spans_file.write_bytes(b"")  # this run's spans only: the file stays bounded
        self._server = _Server((self.host, self.port), keep=self._append)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def spans(self) -> list[SpanRecord]:
        """Every span received so far, in the order received."""
        return [] if self._server is None else self._server.spans()

    def _append(self, records: list[SpanRecord]) -> None:
        if self.spans_file is None:
            return
        lines = b"".join(orjson.dumps(record.as_json()) + b"\n" for record in records)
        with self._write_lock, self.spans_file.open("ab") as out:
            out.write(lines)


def read_spans_file(path: Path) -> list[SpanRecord]:
    if not path.exists():
        raise DevstackError(f"no spans recorded yet: {path} does not exist (is `make up` running natively?)")
    spans = []
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                spans.append(SpanRecord.from_json(orjson.loads(line)))
    return spans


@dataclass(frozen=True)
class Trace:
    """One trace's spans, and the spans of the traces linked to it either way."""

    trace_id: str
    spans: tuple[SpanRecord, ...]
    linked: tuple[SpanRecord, ...] = ()

    def everything(self) -> tuple[SpanRecord, ...]:
        return self.spans + self.linked

    def roots(self) -> list[SpanRecord]:
        ids = {span.span_id for span in self.spans}
        return sorted((s for s in self.spans if s.parent_span_id not in ids), key=lambda s: s.start_ns)

    def orphans(self) -> list[SpanRecord]:
        """Spans, here or in a linked trace, whose parent is named but was never received."""
        known = {(span.trace_id, span.span_id) for span in self.everything()}
        return [s for s in self.everything() if s.parent_span_id and (s.trace_id, s.parent_span_id) not in known]


def connected(*, trace_id: str, spans: Sequence[SpanRecord]) -> Trace:
    """The trace ``trace_id`` and every trace reached from it by links, either way:
    a batch span that links to one of its spans, a span of it that links elsewhere."""
    by_trace: dict[str, list[SpanRecord]] = {}
    linked_with: dict[str, set[str]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
        for link in span.links:
            linked_with.setdefault(span.trace_id, set()).add(link.trace_id)
            linked_with.setdefault(link.trace_id, set()).add(span.trace_id)
    reached = {trace_id}
    pending = [trace_id]
    while pending:
        for other in linked_with.get(pending.pop(), ()):
            if other not in reached and other in by_trace:
                reached.add(other)
                pending.append(other)
    main = tuple(sorted(by_trace.get(trace_id, ()), key=lambda s: s.start_ns))
    linked = tuple(sorted((s for t in reached - {trace_id} for s in by_trace[t]), key=lambda s: s.start_ns))
    return Trace(trace_id=trace_id, spans=main, linked=linked)


def find_trace_id(*, key: str, spans: Iterable[SpanRecord]) -> str | None:
    """The trace that ``key`` names: a trace id, a ``traceparent``, or a request id
    (a span that answered with it in X-Request-ID)."""
    key = key.strip().lower()
    if key.count("-") == 3:  # a traceparent: 00-<trace id>-<span id>-<flags>
        key = key.split("-")[1]
    spans = list(spans)
    if any(span.trace_id == key for span in spans):
        return key
    for span in sorted(spans, key=lambda s: s.start_ns):
        answered = span.attributes.get("http.response.header.x_request_id")
        if isinstance(answered, list) and key in (str(value).lower() for value in answered):
            return span.trace_id
    return None


def render(trace: Trace) -> str:
    """The trace as an indented tree (service, span, duration), then each linked trace."""
    lines = [f"trace {trace.trace_id}"]
    lines += _tree(trace.spans)
    linked_traces: dict[str, list[SpanRecord]] = {}
    for span in trace.linked:
        linked_traces.setdefault(span.trace_id, []).append(span)
    for other, spans in linked_traces.items():
        lines.append(f"linked trace {other}")
        lines += _tree(tuple(spans))
    return "\n".join(lines)


def _tree(spans: Sequence[SpanRecord]) -> list[str]:
    children: dict[str, list[SpanRecord]] = {}
    ids = {span.span_id for span in spans}
    for span in spans:
        children.setdefault(span.parent_span_id if span.parent_span_id in ids else "", []).append(span)
    lines: list[str] = []

    def visit(span: SpanRecord, depth: int) -> None:
        links = f"  ↔ links to {len(span.links)}" if span.links else ""
        failed = "  ERROR" if span.error else ""
        label = f"{'  ' * (depth + 1)}{span.service}: {span.name} [{span.kind}]"
        lines.append(f"{label:<78} {span.duration_ms:9.2f} ms{failed}{links}")
        for child in sorted(children.get(span.span_id, ()), key=lambda s: s.start_ns):
            visit(child, depth + 1)

    for root in sorted(children.get("", ()), key=lambda s: s.start_ns):
        visit(root, 0)
    return lines


def recent(spans: Sequence[SpanRecord], *, most: int = 10) -> list[str]:
    """One line per recent trace that a request started (newest last)."""
    known = {(s.trace_id, s.span_id) for s in spans}
    entries = [s for s in spans if s.kind == "server" and (s.trace_id, s.parent_span_id) not in known]
    lines = []
    for span in sorted(entries, key=lambda s: s.start_ns)[-most:]:
        lines.append(f"{span.trace_id}  {span.service}: {span.name}  {span.duration_ms:.1f} ms")
    return lines


def fetch_spans(url: str, *, timeout: float = 10.0) -> list[SpanRecord]:
    """Every span a receiver at ``url`` (``http://host:port``) holds, over its API."""
    with urllib.request.urlopen(f"{url}/api/spans", timeout=timeout) as answer:  # noqa: S310  # a URL of ours
        return [SpanRecord.from_json(item) for item in orjson.loads(answer.read())]


def main() -> None:
    """A receiver alone, in the foreground (the container tests run it in a container)."""
    parser = argparse.ArgumentParser(prog="python -m devstack.otlp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    server = _Server((args.host, args.port), keep=lambda records: None)
    server.serve_forever()


if __name__ == "__main__":
    main()
