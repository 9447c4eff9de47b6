"""Health, metrics and request ids, as an operator sees them."""

import json
import uuid

from devstack.testing import wait_for


def test_health_aggregates_every_dependency(gateway):
    response = gateway.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    services = {item["service"]: item for item in body["services"]}
    assert set(services) == {"user-service", "order-service", "notification-service", "redis"}
    for item in services.values():
        assert item["status"] == "healthy"
        assert item["response_time_ms"] >= 0


def test_metrics_are_prometheus_text(gateway):
    gateway.get("/health")
    response = gateway.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in response.text


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
    target.need("log_dir")
    account = new_account()
    request_id = f"e2e-{uuid.uuid4().hex}"
    assert gateway.get("/api/users/me", headers={**account.headers, "X-Request-ID": request_id}).status_code == 200

    def logged_by_user_service():
        for line in (target.log_dir / "user-service.log").read_text().splitlines():
            if request_id in line:
                event = json.loads(line)
                if event.get("path") == f"/internal/users/{account.id}":
                    return event
        return None

    event = wait_for(logged_by_user_service, timeout=5, what="user-service's access log line")
    assert event["request_id"] == request_id
    assert event["service"] == "user-service"
    assert event["status"] == 200


def test_logs_are_one_json_object_per_line_without_tokens_or_passwords(gateway, target, new_account):
    target.need("log_dir")
    account = new_account()
    gateway.get("/api/users/me", headers=account.headers)
    for log in target.log_dir.glob("*.log"):
        text = log.read_text()
        assert account.token not in text
        assert account.password not in text
        for line in text.splitlines():
            assert isinstance(json.loads(line), dict), (log.name, line)
