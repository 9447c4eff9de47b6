"""Health, metrics and request ids, as an operator sees them."""

import json
import re
import uuid

import httpx

from devstack.liveclients import Chat, Device, EventStream, Terminal, ticket
from devstack.shop import USER_INSTANCES
from devstack.testing import wait_for

OPS_PORT = 8081  # the gateway's operations port in docker-compose.yml


def test_health_aggregates_every_dependency_on_the_operations_port(gateway, target):
    target.need("ports")
    response = httpx.get(f"{target.ports.url('gateway', OPS_PORT)}/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    services = {item["service"]: item for item in body["services"]}
    assert set(services) == {"user-service", "order-service", "notification-service", "redis"}
    for item in services.values():
        assert item["status"] == "healthy"
        assert item["response_time_ms"] >= 0


def test_the_public_port_tells_health_without_detail_and_no_metrics(gateway):
    health = gateway.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "healthy"})
    assert gateway.get("/metrics").status_code == 404


def test_metrics_are_prometheus_text(gateway, target):
    target.need("ports")
    gateway.get("/health")
    response = httpx.get(f"{target.ports.url('gateway', OPS_PORT)}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in response.text


def test_the_gateways_revocation_consumer_shows_as_connected(target):
    target.need("ports")
    # The compose file names the gateway's queue; an isolated stack prefixes it.
    queue = target.stack.environment("gateway")["EVENTS_QUEUE"] if target.stack else "gateway"
    metrics = f"{target.ports.url('gateway', OPS_PORT)}/metrics"
    wait_for(
        lambda: f'messaging_consumer_connected{{queue="{queue}"}} 1.0' in httpx.get(metrics, timeout=10).text,
        timeout=30,
        what="the gateway's consumer to connect",
    )


def test_the_request_id_is_echoed_or_made(gateway):
    assert (
        gateway.get("/health/live", headers={"X-Request-ID": "trace-me-123"}).headers["x-request-id"] == "trace-me-123"
    )
    made = gateway.get("/health/live").headers["x-request-id"]
    assert len(made) == 32
    assert gateway.get("/health/live", headers={"X-Request-ID": "bad id\twith tab"}).headers["x-request-id"] != (
        "bad id\twith tab"
    )


def test_the_request_id_follows_the_request_into_user_service_logs(gateway, target, new_account):
    target.need("logs")
    account = new_account()
    request_id = f"e2e-{uuid.uuid4().hex}"
    assert gateway.get("/api/users/me", headers={**account.headers, "X-Request-ID": request_id}).status_code == 200

    def logged_by_user_service():
        logs = target.logs()
        for line in "\n".join(logs.get(instance, "") for instance in USER_INSTANCES).splitlines():
            if request_id in line:
                event = json.loads(line)
                if event.get("path") == f"/internal/users/{account.id}":
                    return event
        return None

    event = wait_for(logged_by_user_service, timeout=5, what="user-service's access log line")
    assert event["request_id"] == request_id
    assert event["service"] == "user-service"
    assert event["status"] == 200


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


def test_a_full_flow_leaves_no_token_password_or_secret_in_any_log(gateway, target, new_account):
    """Every way a credential reaches the stack (register and log in, a failed log in,
    bearer tokens on every kind of call, tickets in URLs, tokens on the TCP and UDP
    feeds, service tokens between services), then every service's log is searched
    for them, for anything shaped like a JWT, and for the stack's own secrets."""
    target.need("logs", "secrets", "ports")
    account = new_account()
    wrong_password = f"not-{account.password}"
    assert gateway.post("/api/auth/token", json={"email": account.email, "password": wrong_password}).status_code == 401
    assert gateway.get("/api/users/me", headers=account.headers).status_code == 200
    assert (
        gateway.patch(f"/api/users/{account.id}", json={"name": "Renamed"}, headers=account.headers).status_code == 200
    )
    placed = gateway.post(
        "/api/orders",
        json={"items": [{"sku": "LOG-1", "quantity": 1, "unit_price": "1.00"}]},
        headers={**account.headers, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert placed.status_code == 201, placed.text
    assert gateway.post(f"/api/orders/{placed.json()['id']}/cancel", headers=account.headers).status_code == 200
    assert gateway.get("/api/notifications", headers=account.headers).status_code == 200
    tickets = [ticket(gateway, account), ticket(gateway, account)]
    with EventStream(gateway, params={"ticket": tickets[0]}) as stream:
        assert stream.response.status_code == 200
    with Chat(target.gateway_url, ticket=tickets[1]) as chat:
        assert chat.receive()["type"] == "welcome"
    terminal = Terminal(target.ports.port("notification-service", 9000))
    try:
        assert terminal.receive()["type"] == "welcome"
        terminal.send({"type": "auth", "token": account.token})
        assert terminal.receive() == {"type": "authenticated", "userId": account.id}
    finally:
        terminal.close()
    device = Device(target.ports.port("notification-service", 9001))
    try:
        device.send({"type": "ping", "id": 1, "token": account.token})
        assert device.receive() == {"type": "ack", "id": 1}
    finally:
        device.close()

    credentials = {account.token, account.password, wrong_password, target.admin_password, *tickets, *target.secrets}
    logs = target.logs()
    assert set(logs) >= {"gateway", "user-service", "order-service", "notification-service"}
    for name, text in logs.items():
        for line in text.splitlines():
            assert isinstance(json.loads(line), dict), (name, line)
        leaked = [credential[:12] + "…" for credential in credentials if credential in text]
        assert not leaked, (name, leaked)
        assert not JWT.search(text), (name, JWT.search(text))
