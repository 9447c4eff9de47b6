"""One order followed across the whole deployment in its trace (docs/observability.md).

The client sends a sampled ``traceparent`` (as a browser with tracing would), places
an order through the gateway with the user's event stream open, and reads the spans
the services exported over OTLP to the test's receiver (devstack.otlp, which parses
the real OTLP protobufs). The trace, with the traces its spans link to either way,
must hold every hop: HTTP in the gateway and order-service, the gRPC user check, the
event store's append, the relay's publish, notification-service's consume, its
notification, the mail sent over SMTP, and the live push that reached the stream;
and the batches that served it (the append group, the read model's projection),
each linked to it.
"""

import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest

from devstack.liveclients import WELCOME, EventStream
from devstack.otlp import SpanRecord, Trace, connected
from devstack.testing import wait_for

pytestmark = pytest.mark.e2e


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _one(spans: list[SpanRecord], what: str, matches: Callable[[SpanRecord], bool]) -> SpanRecord:
    found = [span for span in spans if matches(span)]
    assert found, f"no span for {what} among: " + ", ".join(sorted({f"{s.service}:{s.name}" for s in spans}))
    return found[0]


# Each hop of an order: (what, the span that shows it).
HOPS: dict[str, Callable[[SpanRecord], bool]] = {
    "the gateway's request": lambda s: s.service == "gateway" and s.kind == "server" and s.name == "POST /api/orders",
    "the gateway's call to order-service": lambda s: s.service == "gateway" and s.kind == "client",
    "order-service's request": lambda s: (
        s.service == "order-service" and s.kind == "server" and s.name == "POST /internal/orders"
    ),
    "order-service's gRPC check of the user": lambda s: (
        s.service == "order-service" and s.kind == "client" and "GetUser" in s.name
    ),
    "user-service answering it": lambda s: s.service == "user-service" and s.kind == "server" and "GetUser" in s.name,
    "the event store's append": lambda s: s.service == "event-store" and s.kind == "server" and "Append" in s.name,
    "the events written in a group": lambda s: s.service == "event-store" and s.name == "append group",
    "the relay's publish": lambda s: s.service == "event-store" and s.kind == "producer",
    "order-service's read model": lambda s: s.service == "order-service" and s.name.startswith("project "),
    "notification-service's consume": lambda s: (
        s.service == "notification-service" and s.kind == "consumer" and s.name.startswith("process ")
    ),
    "the notification": lambda s: s.service == "notification-service" and s.name == "notify order.placed",
    "the mail sent over SMTP": lambda s: s.service == "notification-service" and s.name == "send mail",
    "the live push": lambda s: s.service == "notification-service" and s.name == "push live",
    "the delivery to the open event stream": lambda s: (
        s.service == "notification-service"
        and s.name == "deliver live"
        and int(s.attributes.get("interchange.live.subscribers", 0)) >= 1
    ),
}


def test_an_order_placed_through_the_gateway_is_one_trace_across_every_service(target, gateway, new_account):
    target.need("spans")
    assert target.spans is not None
    account = new_account("Traced")
    traceparent, trace_id, client_span = _traceparent()
    request_id = f"traced-{uuid.uuid4().hex}"
    with EventStream(gateway, headers=account.headers) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        placed = gateway.post(
            "/api/orders",
            json={"items": [{"sku": "TRACE-1", "quantity": 1, "unit_price": "3.00"}]},
            headers={
                **account.headers,
                "Idempotency-Key": str(uuid.uuid4()),
                "traceparent": traceparent,
                "X-Request-ID": request_id,
            },
        )
        assert placed.status_code == 201, placed.text
        # The answer names the trace, so that a user can find it.
        answered = placed.headers["traceparent"].split("-")
        assert answered[1] == trace_id
        assert answered[3] == "01"
        order_id = placed.json()["id"]
        # The welcome notification may come first; the order's comes live.
        while (note := stream.notifications(1)[0])["type"] == WELCOME:
            pass
        assert note["data"]["order_id"] == order_id

    missing: list[str] = []

    def complete() -> Trace | None:
        trace = connected(trace_id=trace_id, spans=target.spans())
        everything = list(trace.everything())
        missing[:] = [what for what, hop in HOPS.items() if not any(hop(s) for s in everything)]
        return None if missing else trace

    try:
        # Every half second: each look reads every span received (over HTTP under compose).
        trace = wait_for(complete, timeout=60, interval=0.5, what="every hop of the order in its trace")
    except TimeoutError:
        pytest.fail(f"the order's trace lacks {', '.join(missing)}")
    everything = list(trace.everything())
    for what, hop in HOPS.items():
        _one(everything, what, hop)

    # The request's own spans share the client's trace; the group of appends is a
    # trace of its own that links to this order's append.
    in_trace = {span.span_id for span in trace.spans}
    append = _one(list(trace.spans), "the append", HOPS["the event store's append"])
    group = _one(everything, "the group", HOPS["the events written in a group"])
    assert group.trace_id != trace_id
    assert not group.parent_span_id
    assert any(link.trace_id == trace_id and link.span_id in in_trace for link in group.links)
    assert any(link.span_id == append.span_id for link in group.links)
    # Each message's work is its own producer's child: the relay's publish continues
    # the append, the consumer the publish, the mail and the push the consumer's work.
    publish = _one(list(trace.spans), "the publish", HOPS["the relay's publish"])
    consume = _one(list(trace.spans), "the consume", HOPS["notification-service's consume"])
    assert _ancestors(trace, consume) >= {publish.span_id}
    assert _ancestors(trace, publish) >= {append.span_id}
    for later in ("the mail sent over SMTP", "the live push", "the delivery to the open event stream"):
        assert consume.span_id in _ancestors(trace, _one(list(trace.spans), later, HOPS[later]))
    # No orphans: every parent named was received (the client's own span aside).
    assert [s for s in trace.orphans() if s.parent_span_id != client_span] == []
    # Logs carry the trace: the order's request log lines name it.
    if target.logs is not None:
        assert any(trace_id in text for text in target.logs().values())
    # Natively, the README's command prints it as a tree, found by the request id too.
    if target.stack is not None and target.stack.traces is not None:
        printed = subprocess.run(
            [sys.executable, "-m", "devstack", "trace", "--spans", str(target.stack.traces.spans_file), request_id],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert printed.startswith(f"trace {trace_id}")
        for service in ("gateway", "order-service", "user-service", "event-store", "notification-service"):
            assert f"{service}: " in printed
        assert "linked trace" in printed


def _ancestors(trace: Trace, span: SpanRecord) -> set[str]:
    by_id = {s.span_id: s for s in trace.spans}
    found: set[str] = set()
    current = span
    while current.parent_span_id in by_id:
        found.add(current.parent_span_id)
        current = by_id[current.parent_span_id]
    return found
