"""event-store's HTTP API, served by the real process."""

import json
import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(service, service_token):
    with httpx.Client(base_url=service.url, headers={"authorization": f"Bearer {service_token}"}, timeout=10) as c:
        yield c


def event(type_="order.created", **data):
    return {"id": str(uuid.uuid4()), "type": type_, "data": data or {"n": 1}, "metadata": {"correlation_id": "c"}}


def stream():
    return f"order-{uuid.uuid4()}"


def version_of(client, s):
    page = client.get(f"/streams/{s}/events", params={"direction": "backward", "limit": 1}).json()
    return page["events"][0]["version"] if page["events"] else 0


@pytest.mark.parametrize("authorization", [None, "Bearer nope"])
def test_everything_but_health_needs_a_service_token(service, authorization):
    headers = {"authorization": authorization} if authorization else {}
    with httpx.Client(base_url=service.url, headers=headers) as bare:
        assert bare.get("/events").status_code == 401
        assert bare.post(f"/streams/{stream()}/events", json={}).status_code == 401
        assert bare.get("/health").status_code == 200


def test_append_read_and_replay(client):
    s = stream()
    batch = [event(n=1), event(n=2)]
    first = client.post(f"/streams/{s}/events", json={"expected_version": "no_stream", "events": batch})
    assert first.status_code == 201
    assert first.json() == {"stream_id": s, "first_version": 1, "last_version": 2, "already_recorded": False}
    again = client.post(f"/streams/{s}/events", json={"expected_version": "no_stream", "events": batch})
    assert again.status_code == 200
    assert again.json()["already_recorded"] is True
    page = client.get(f"/streams/{s}/events").json()
    assert [e["version"] for e in page["events"]] == [1, 2]
    assert page["events"][1]["data"] == {"n": 2}


def test_a_conflict_is_409_with_the_actual_version(client):
    s = stream()
    client.post(f"/streams/{s}/events", json={"expected_version": "any", "events": [event(), event()]})
    response = client.post(f"/streams/{s}/events", json={"expected_version": 1, "events": [event()]})
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["actual_version"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {"expected_version": "latest", "events": [event()]},
        {"expected_version": -1, "events": [event()]},
        {"expected_version": "any", "events": []},
        {"expected_version": "any", "events": [event(big="x" * 70_000)]},
        {"expected_version": "any", "events": [{**event(), "type": "Bad Type"}]},
        {"expected_version": "any", "events": [{**event(), "id": "not-a-uuid"}]},
        {"expected_version": "any", "events": [{**event(), "data": [1, 2]}]},
        {"expected_version": "any"},
        {"expected_version": "any", "events": [event(text="nul\u0000inside")]},
        {"expected_version": 2**63, "events": [event()]},
    ],
    ids=[
        "unknown-word",
        "negative",
        "empty",
        "too-large",
        "bad-type",
        "bad-id",
        "data-not-object",
        "no-events",
        "nul-in-data",
        "beyond-bigint",
    ],
)
def test_bad_appends_are_422_and_write_nothing(client, body):
    s = stream()
    response = client.post(f"/streams/{s}/events", json=body)
    assert response.status_code == 422, response.text
    assert version_of(client, s) == 0


def test_invalid_json_is_422(client):
    s = stream()
    response = client.post(
        f"/streams/{s}/events",
        content=b'{"expected_version": "any", "events": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert version_of(client, s) == 0


@pytest.mark.parametrize("stream_id", ["x" * 201, "-starts-with-dash", "sp%20ace"])
def test_bad_stream_ids_are_422(client, stream_id):
    response = client.post(f"/streams/{stream_id}/events", json={"expected_version": "any", "events": [event()]})
    assert response.status_code == 422


@pytest.mark.parametrize("start", [2**63, 2**70])
def test_reads_beyond_any_position_are_422(client, start):
    assert client.get("/events", params={"from": start}).status_code == 422
    assert client.get(f"/streams/{stream()}/events", params={"from": start}).status_code == 422


def test_snapshots(client):
    s = stream()
    assert client.get(f"/streams/{s}/snapshot").status_code == 404
    client.post(f"/streams/{s}/events", json={"expected_version": "any", "events": [event(), event()]})
    assert client.put(f"/streams/{s}/snapshot", json={"version": 3, "data": {}}).status_code == 422
    saved = client.put(f"/streams/{s}/snapshot", json={"version": 2, "data": {"total": "9.50"}})
    assert saved.status_code == 200
    assert client.get(f"/streams/{s}/snapshot").json()["data"] == {"total": "9.50"}


def sse_events(response, count):
    """Parse text/event-stream lines until ``count`` events arrived."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if current:
                events.append(current)
                current = {}
                if len(events) == count:
                    return events
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    return events


def test_sse_catches_up_follows_live_and_resumes_after_the_last_event_id(client, service_token):
    s = stream()
    client.post(f"/streams/{s}/events", json={"expected_version": "any", "events": [event(n=i) for i in range(3)]})
    headers = {"authorization": f"Bearer {service_token}"}
    with httpx.Client(base_url=client.base_url, headers=headers, timeout=10) as sse:
        with sse.stream("GET", "/subscribe", params={"stream": s}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            first = sse_events(response, 2)
        assert [e["id"] for e in first] == ["1", "2"]
        assert first[0]["event"] == "order.created"
        client.post(f"/streams/{s}/events", json={"expected_version": 3, "events": [event(n=3)]})
        with sse.stream("GET", "/subscribe", params={"stream": s}, headers={"last-event-id": "2"}) as response:
            resumed = sse_events(response, 2)
    assert [e["id"] for e in resumed] == ["3", "4"]
    assert json.loads(resumed[1]["data"])["data"] == {"n": 3}


def test_sse_refuses_bad_input_before_streaming(client):
    assert client.get("/subscribe", params={"stream": "bad stream"}).status_code == 422
    assert client.get("/subscribe", params={"stream": "s\n"}).status_code == 422
    assert client.get("/subscribe", params={"from": 2**63}).status_code == 422
    for last_event_id in (b"abc", b"\xb2", b"9" * 30):  # \xb2 is latin-1 for "²", which isdigit() takes
        assert client.get("/subscribe", headers={"last-event-id": last_event_id}).status_code == 422
