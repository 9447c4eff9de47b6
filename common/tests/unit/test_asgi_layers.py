"""Each layer of interchange_common.asgi on its own, around a bare ASGI app, and the
order ObservabilityMiddleware stacks them in (no sockets)."""

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from interchange_common import lifecycle
from interchange_common.asgi import (
    LOG_FIELDS,
    AccessLogMiddleware,
    BodyLimitMiddleware,
    CallerGoneMiddleware,
    CloseWhenDrainingMiddleware,
    DeadlineMiddleware,
    HeaderLimitMiddleware,
    ObservabilityMiddleware,
    RequestIdMiddleware,
    UnhandledErrorMiddleware,
)
from interchange_common.asgi.callergone import CALLER_GONE
from interchange_common.deadlines import time_left
from interchange_common.requestctx import current_request_id

EMPTY_BODY = {"type": "http.request", "body": b"", "more_body": False}


def http_scope(*, method="GET", path="/things", headers=(), http_version="1.1"):
    return {"type": "http", "http_version": http_version, "method": method, "path": path, "headers": list(headers)}


def streamed(http_version="1.1"):
    """A request whose body streams in (HTTP/1.1 says so in its head, HTTP/2 need not)."""
    chunked = [(b"transfer-encoding", b"chunked")] if http_version == "1.1" else []
    return http_scope(method="POST", headers=chunked, http_version=http_version)


class Caller:
    """Sends ``messages`` as its request, then nothing until ``leave()``; keeps what it is sent."""

    def __init__(self, *messages):
        self.messages = list(messages) if messages else [dict(EMPTY_BODY)]
        self.left = asyncio.Event()
        self.sent = []

    async def receive(self):
        if self.messages:
            return self.messages.pop(0)
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        self.sent.append(message)

    def leave(self):
        self.left.set()

    @property
    def statuses(self):
        return [message["status"] for message in self.sent if message["type"] == "http.response.start"]

    def headers(self):
        return self.sent[0]["headers"]

    def problem(self):
        return json.loads(b"".join(message.get("body", b"") for message in self.sent[1:]))


async def call(app, scope, caller=None):
    caller = caller or Caller()
    await asyncio.wait_for(app(scope, caller.receive, caller.send), timeout=5)
    return caller


def answering(status=200, headers=None):
    """An app that reads the whole body, then answers ``status``."""

    async def app(scope, receive, send):
        while (await receive()).get("more_body", False):
            pass
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"done"})

    return app


async def never_answers(scope, receive, send):
    await asyncio.Event().wait()


async def broken(scope, receive, send):
    raise RuntimeError("secret detail")


@pytest.fixture
def restore_lifecycle():
    before = lifecycle.current()
    yield
    lifecycle.install(before)


@pytest.fixture
def draining(restore_lifecycle):
    lifecycle.install(lifecycle.Shutdown(drain_seconds=0, draining=True))


@pytest.fixture
def access_log(caplog):
    with caplog.at_level(logging.INFO, logger="interchange.access"):
        yield lambda: [record for record in caplog.records if record.message == "request"]


LAYERS = {
    "request id": RequestIdMiddleware,
    "draining": CloseWhenDrainingMiddleware,
    "access log": AccessLogMiddleware,
    "unhandled error": UnhandledErrorMiddleware,
    "header limit": lambda app: HeaderLimitMiddleware(app, max_header_bytes=10),
    "deadline": DeadlineMiddleware,
    "caller gone": CallerGoneMiddleware,
    "body limit": lambda app: BodyLimitMiddleware(app, max_body_bytes=10),
    "whole stack": lambda app: ObservabilityMiddleware(app, max_body_bytes=10, max_header_bytes=10),
}


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
async def test_other_scopes_pass_straight_through(layer, kind):
    seen = []

    async def app(scope, receive, send):
        seen.append((scope, receive, send))

    async def receive():
        return {"type": f"{kind}.connect"}

    async def send(message):
        pass

    # Over every limit the layers have: none of them applies outside HTTP.
    scope = {"type": kind, "headers": [(b"x-request-timeout-ms", b"1"), (b"content-length", b"999"), (b"x", b"x" * 99)]}
    await layer(app)(scope, receive, send)
    assert seen == [(scope, receive, send)]


# RequestIdMiddleware


async def test_the_callers_id_is_the_requests_and_is_echoed_after_the_apps_headers():
    seen = []
    own_headers = [(b"content-type", b"text/plain")]

    async def app(scope, receive, send):
        seen.append(current_request_id())
        await answering(headers=own_headers)(scope, receive, send)

    caller = await call(RequestIdMiddleware(app), http_scope(headers=[(b"x-request-id", b"trace-7")]))
    assert seen == ["trace-7"]
    assert caller.headers() == [(b"content-type", b"text/plain"), (b"x-request-id", b"trace-7")]
    assert own_headers == [(b"content-type", b"text/plain")]  # the app's list is its own, sent again next time
    assert current_request_id() == "-"


async def test_an_unacceptable_id_gives_way_to_a_new_one():
    caller = await call(RequestIdMiddleware(answering()), http_scope(headers=[(b"x-request-id", b"bad id\n")]))
    (echoed,) = [value for name, value in caller.headers() if name == b"x-request-id"]
    assert len(echoed) == 32
    assert echoed != b"bad id\n"


# CloseWhenDrainingMiddleware


async def test_draining_that_begins_during_a_request_closes_its_connection(restore_lifecycle):
    async def app(scope, receive, send):
        lifecycle.install(lifecycle.Shutdown(drain_seconds=0, draining=True))
        await answering()(scope, receive, send)

    caller = await call(CloseWhenDrainingMiddleware(app), http_scope())
    assert caller.headers() == [(b"connection", b"close")]


async def test_http_2_answers_never_say_connection_close(draining):
    caller = await call(CloseWhenDrainingMiddleware(answering()), http_scope(http_version="2"))
    assert caller.headers() == []


async def test_without_draining_answers_keep_their_connection():
    caller = await call(CloseWhenDrainingMiddleware(answering()), http_scope())
    assert caller.headers() == []


# AccessLogMiddleware


def requests_served(**labels):
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0


async def test_the_status_sent_is_logged_and_counted_by_route_template(access_log):
    async def app(scope, receive, send):
        scope["route"] = SimpleNamespace(path="/teapots/{teapot_id}")  # as Starlette's router does
        await answering(status=418)(scope, receive, send)

    labels = {"method": "PUT", "route": "/teapots/{teapot_id}", "status": "418"}
    before = requests_served(**labels)
    await call(AccessLogMiddleware(app), http_scope(method="PUT", path="/teapots/7"))
    (record,) = access_log()
    assert (record.method, record.path, record.status) == ("PUT", "/teapots/7", 418)
    assert record.duration_ms >= 0
    assert requests_served(**labels) == before + 1


async def test_no_answer_is_logged_as_500_and_a_caller_gone_as_499(access_log):
    async def silent(scope, receive, send):
        pass

    async def left(scope, receive, send):
        scope[CALLER_GONE] = True

    await call(AccessLogMiddleware(silent), http_scope())
    await call(AccessLogMiddleware(left), http_scope())
    assert [record.status for record in access_log()] == [500, 499]


async def test_an_error_passes_on_and_is_logged_as_500(access_log):
    with pytest.raises(RuntimeError):
        await call(AccessLogMiddleware(broken), http_scope())
    assert [record.status for record in access_log()] == [500]


async def test_fields_the_app_adds_are_on_its_line_only(access_log):
    async def refusing(scope, receive, send):
        scope[LOG_FIELDS] = {"shed": "order-service"}
        await answering(status=503)(scope, receive, send)

    await call(AccessLogMiddleware(refusing), http_scope())
    await call(AccessLogMiddleware(answering()), http_scope())
    shed, plain = access_log()
    assert (shed.status, shed.shed) == (503, "order-service")
    assert not hasattr(plain, "shed")


# UnhandledErrorMiddleware


async def test_an_error_before_the_answer_is_a_logged_500_problem(caplog):
    with caplog.at_level(logging.ERROR):
        caller = await call(UnhandledErrorMiddleware(broken), http_scope())
    assert caller.statuses == [500]
    assert caller.problem()["detail"] == "internal error"
    (record,) = [record for record in caplog.records if record.message == "unhandled error"]
    assert record.exc_info is not None


async def test_an_error_after_the_answer_started_is_only_logged(caplog):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    with caplog.at_level(logging.ERROR):
        caller = await call(UnhandledErrorMiddleware(app), http_scope())
    assert caller.statuses == [200]
    assert len(caller.sent) == 1
    assert [record.message for record in caplog.records] == ["unhandled error"]


# HeaderLimitMiddleware


async def test_headers_up_to_the_limit_pass_and_one_byte_more_is_431():
    limited = HeaderLimitMiddleware(answering(), max_header_bytes=10)
    assert (await call(limited, http_scope(headers=[(b"x-a", b"1234567")]))).statuses == [200]
    refused = await call(limited, http_scope(headers=[(b"x-a", b"12345678")]))
    assert refused.statuses == [431]
    assert refused.messages == [EMPTY_BODY]  # the app never ran: nothing was read


# DeadlineMiddleware


async def test_without_a_deadline_the_app_gets_the_callers_own_send():
    seen = []

    async def app(scope, receive, send):
        seen.append((send, time_left()))

    caller = Caller()
    await DeadlineMiddleware(app)(http_scope(), caller.receive, caller.send)
    assert seen == [(caller.send, None)]


async def test_a_deadline_that_passes_before_the_answer_is_a_504():
    caller = await call(DeadlineMiddleware(never_answers), http_scope(headers=[(b"x-request-timeout-ms", b"20")]))
    assert caller.statuses == [504]
    assert caller.problem()["detail"] == "the caller's deadline passed"


async def test_a_deadline_that_passes_after_the_answer_started_ends_it_quietly():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await never_answers(scope, receive, send)

    caller = await call(DeadlineMiddleware(app), http_scope(headers=[(b"x-request-timeout-ms", b"20")]))
    assert caller.statuses == [200]
    assert len(caller.sent) == 1


async def test_another_timeout_is_not_the_callers_deadline():
    async def app(scope, receive, send):
        raise TimeoutError("a dependency's")

    with pytest.raises(TimeoutError, match="a dependency's"):
        await call(DeadlineMiddleware(app), http_scope(headers=[(b"x-request-timeout-ms", b"5000")]))


# CallerGoneMiddleware


async def test_a_caller_leaving_after_its_answer_cancels_nothing():
    async def app(scope, receive, send):
        await answering()(scope, receive, send)
        caller.leave()
        assert (await receive())["type"] == "http.disconnect"  # a streaming answer learns of it so

    caller = Caller()
    scope = http_scope()
    await call(CallerGoneMiddleware(app), scope, caller)
    assert caller.statuses == [200]
    assert CALLER_GONE not in scope


async def test_a_caller_leaving_before_its_answer_cancels_the_work_and_marks_the_scope():
    cancelled = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        caller.leave()
        try:
            await never_answers(scope, receive, send)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = Caller()
    scope = http_scope()
    await call(CallerGoneMiddleware(app), scope, caller)
    assert cancelled.is_set()
    assert scope[CALLER_GONE] is True
    assert caller.sent == []


async def test_a_cancellation_from_elsewhere_passes_on():
    started = asyncio.Event()

    async def app(scope, receive, send):
        started.set()
        await never_answers(scope, receive, send)

    serving = asyncio.create_task(call(CallerGoneMiddleware(app), http_scope()))
    await started.wait()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving


# BodyLimitMiddleware


def body(*chunks):
    return [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)]


async def test_an_announced_body_over_the_cap_is_413_before_the_app_runs():
    scope = http_scope(method="POST", headers=[(b"content-length", b"11")])
    caller = await call(BodyLimitMiddleware(answering(), max_body_bytes=10), scope, Caller(*body(b"x" * 11)))
    assert caller.statuses == [413]
    assert len(caller.messages) == 1  # unread


@pytest.mark.parametrize("http_version", ["1.1", "2"])
async def test_a_body_of_exactly_the_cap_passes_and_one_byte_more_is_413(http_version):
    limited = BodyLimitMiddleware(answering(), max_body_bytes=10)
    assert (await call(limited, streamed(http_version), Caller(*body(b"x" * 6, b"x" * 4)))).statuses == [200]
    assert (await call(limited, streamed(http_version), Caller(*body(b"x" * 6, b"x" * 5)))).statuses == [413]


async def test_an_http_1_request_without_a_body_is_passed_on_as_it_is():
    seen = []

    async def app(scope, receive, send):
        seen.append((receive, send))

    caller = Caller()
    await BodyLimitMiddleware(app, max_body_bytes=10)(http_scope(), caller.receive, caller.send)
    assert seen == [(caller.receive, caller.send)]


async def test_the_apps_own_answer_to_a_refused_body_gives_way_to_the_reason():
    async def app(scope, receive, send):
        try:
            while (await receive()).get("more_body", False):
                pass
        except Exception:  # as FastAPI does: any error reading the body is its 400
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"There was an error parsing the body"})

    caller = await call(BodyLimitMiddleware(app, max_body_bytes=10), streamed(), Caller(*body(b"x" * 11)))
    assert caller.statuses == [413]
    assert caller.problem()["detail"] == "request body too large"


async def test_a_body_that_stops_arriving_is_408():
    limited = BodyLimitMiddleware(answering(), max_body_bytes=10, body_timeout_seconds=0.02)
    caller = await call(limited, streamed(), Caller({"type": "http.request", "body": b"{", "more_body": True}))
    assert caller.statuses == [408]
    assert caller.problem()["detail"] == "the request body did not arrive within 0.02 s"


# The stack's order


@pytest.mark.parametrize(
    ("status", "headers", "app"),
    [
        (431, [(b"x-filler", b"x" * 200)], answering()),
        (413, [(b"content-length", b"11")], answering()),
        (504, [(b"x-request-timeout-ms", b"20")], never_answers),
        (500, [], broken),
    ],
)
async def test_answers_made_inside_carry_the_request_id_close_while_draining_and_are_logged(
    draining, access_log, status, headers, app
):
    stack = ObservabilityMiddleware(app, max_body_bytes=10, max_header_bytes=100, body_timeout_seconds=5)
    caller = await call(stack, http_scope(headers=[(b"x-request-id", b"trace-9"), *headers]))
    assert caller.statuses == [status]
    assert caller.headers()[-2:] == [(b"x-request-id", b"trace-9"), (b"connection", b"close")]
    assert caller.problem()["request_id"] == "trace-9"
    assert [record.status for record in access_log()] == [status]


async def test_a_body_too_slow_is_a_408_in_the_access_log(access_log):
    stack = ObservabilityMiddleware(answering(), max_body_bytes=10, body_timeout_seconds=0.02)
    caller = Caller({"type": "http.request", "body": b"{", "more_body": True})
    await call(stack, streamed(), caller)
    assert caller.statuses == [408]
    assert [record.status for record in access_log()] == [408]


async def test_a_caller_gone_before_its_answer_is_a_499_in_the_access_log(access_log):
    async def app(scope, receive, send):
        await receive()
        caller.leave()
        await never_answers(scope, receive, send)

    caller = Caller()
    await call(ObservabilityMiddleware(app, max_body_bytes=10), http_scope(), caller)
    assert caller.sent == []
    assert [record.status for record in access_log()] == [499]
