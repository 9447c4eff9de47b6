"""ObservabilityMiddleware and the problem handlers, on a small FastAPI app (no sockets)."""

import asyncio
import json
import logging

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from interchange_common.asgi import ObservabilityMiddleware
from interchange_common.deadlines import time_left
from interchange_common.problems import install_problem_handlers
from interchange_common.requestctx import current_request_id


class Item(BaseModel):
    name: str
    count: int


def make_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/id")
    async def request_id() -> dict[str, str]:
        return {"request_id": current_request_id()}

    @app.post("/items")
    async def create(item: Item) -> Item:
        return item

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    @app.get("/slow")
    async def slow() -> None:
        await asyncio.Event().wait()

    @app.get("/time-left")
    async def left() -> dict[str, float | None]:
        return {"left": time_left()}

    app.add_middleware(ObservabilityMiddleware, max_body_bytes=1024)
    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_the_callers_request_id_is_used_and_echoed(client):
    response = await client.get("/id", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json() == {"request_id": "abc-123"}


async def test_a_request_id_is_made_when_none_is_sent(client):
    response = await client.get("/id")
    assert len(response.headers["x-request-id"]) == 32
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_malformed_json_is_a_422_problem(client):
    response = await client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert body["request_id"] == response.headers["x-request-id"]


async def test_wrong_types_are_a_422_problem_that_does_not_echo_the_input(client):
    response = await client.post("/items", json={"name": "n", "count": "hunter2-not-a-number"})
    assert response.status_code == 422
    assert "hunter2" not in response.text


async def test_an_announced_large_body_is_refused_with_413(client):
    response = await client.post("/raw", content=b"x" * 2048)
    assert response.status_code == 413
    assert response.json()["detail"] == "request body too large"


async def test_a_streamed_large_body_is_refused_with_413(client):
    async def chunks():
        for _ in range(4):
            yield b"x" * 512

    response = await client.post("/raw", content=chunks())
    assert response.status_code == 413


async def test_a_streamed_large_body_to_a_model_route_is_413_not_400(client):
    async def chunks():
        for _ in range(4):
            yield b'{"name": "' + b"x" * 500

    response = await client.post("/items", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == "request body too large"


async def test_invented_methods_share_one_metrics_label(client):
    from prometheus_client import REGISTRY

    for method in ("FOO1", "FOO2"):
        await client.request(method, "/id")
    labels = {"route": "/id", "status": "405"}
    assert (REGISTRY.get_sample_value("http_requests_total", {**labels, "method": "OTHER"}) or 0) >= 2
    assert REGISTRY.get_sample_value("http_requests_total", {**labels, "method": "FOO1"}) is None


async def test_a_small_body_passes(client):
    response = await client.post("/raw", content=b"x" * 100)
    assert response.json() == {"size": 100}


async def test_an_unhandled_error_is_a_500_problem_without_details(client, caplog):
    with caplog.at_level(logging.ERROR):
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret detail" not in response.text
    assert response.headers["x-request-id"]
    assert any(record.message == "unhandled error" for record in caplog.records)


async def test_unknown_paths_are_404_problems(client):
    response = await client.get("/nope")
    assert response.status_code == 404
    assert json.loads(response.text)["title"] == "Not Found"


async def test_the_callers_deadline_bounds_the_work_and_passes_as_504(client):
    response = await client.get("/slow", headers={"X-Request-Timeout-Ms": "50"})
    assert response.status_code == 504
    assert response.json()["detail"] == "the caller's deadline passed"


async def test_the_callers_deadline_is_what_outgoing_calls_see(client):
    response = await client.get("/time-left", headers={"X-Request-Timeout-Ms": "800"})
    assert 0 < response.json()["left"] <= 0.8
    assert (await client.get("/time-left")).json() == {"left": None}


async def test_work_is_cancelled_when_the_caller_goes_away():
    started, cancelled, caller_left = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def app(scope, receive, send):
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await caller_left.wait()
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/work", "headers": []}
    serving = asyncio.create_task(ObservabilityMiddleware(app, max_body_bytes=1024)(scope, receive, send))
    await started.wait()
    caller_left.set()
    await asyncio.wait_for(serving, timeout=5)  # returns normally: the server expects that
    assert cancelled.is_set()
    assert sent == []


async def test_oversized_headers_are_refused_with_431(client):
    response = await client.get("/id", headers={"X-Filler": "x" * (17 * 1024)})
    assert response.status_code == 431
    assert response.json()["detail"] == "request header fields too large"
    assert (await client.get("/id", headers={"X-Filler": "x" * 1024})).status_code == 200


def _serve(app, *, messages, body_timeout_seconds):
    """The middleware around ``app`` with a caller that sends ``messages`` and then
    nothing until ``leave`` is set; what it was sent, and the serving task."""
    leave = asyncio.Event()
    sent: list[dict[str, object]] = []

    async def receive():
        if messages:
            return messages.pop(0)
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/raw", "headers": []}
    middleware = ObservabilityMiddleware(app, max_body_bytes=1024, body_timeout_seconds=body_timeout_seconds)
    return sent, leave, asyncio.create_task(middleware(scope, receive, send))


async def read_body_app(scope, receive, send):
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


async def test_a_body_that_stops_arriving_is_a_408():
    sent, leave, serving = _serve(
        read_body_app, messages=[{"type": "http.request", "body": b"{", "more_body": True}], body_timeout_seconds=0.05
    )
    await asyncio.wait_for(serving, timeout=5)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["detail"] == "the request body did not arrive within 0.05 s"
    leave.set()


async def test_a_body_that_arrives_in_time_is_read():
    sent, _, serving = _serve(
        read_body_app,
        messages=[
            {"type": "http.request", "body": b"{", "more_body": True},
            {"type": "http.request", "body": b"}", "more_body": False},
        ],
        body_timeout_seconds=5,
    )
    await asyncio.wait_for(serving, timeout=5)
    assert sent[0]["status"] == 200


async def test_after_the_body_a_silent_caller_is_not_timed_out():
    """A streaming answer waits for the caller to go: that wait has no body timeout."""

    async def app(scope, receive, send):
        await receive()  # the whole (empty) body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"event\n", "more_body": True})
        await receive()  # until the caller goes

    sent, leave, serving = _serve(
        app, messages=[{"type": "http.request", "body": b"", "more_body": False}], body_timeout_seconds=0.05
    )
    await asyncio.sleep(0.2)  # four body timeouts pass while the answer streams
    assert not serving.done()
    leave.set()
    await asyncio.wait_for(serving, timeout=5)
    assert [message.get("status") for message in sent] == [200, None]  # no 408 or 500 after the 200
