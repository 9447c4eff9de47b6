"""Behind the gateway: internal endpoints refuse calls without a valid service token."""

import subprocess
import sys
import uuid

import grpc
import httpx
import pytest

from interchange_common.contracts import user_pb2, user_pb2_grpc
from interchange_common.servicejwt import ServiceTokenIssuer


@pytest.fixture(scope="module")
def user_service(target):
    target.need("user_service_url", "service_jwt_secret")
    with httpx.Client(base_url=target.user_service_url, timeout=5) as client:
        yield client


def service_token(target, *, service="order-service", audience="user-service"):
    return ServiceTokenIssuer(service=service, secret=target.service_jwt_secret, ttl_seconds=60).token_for(
        audience=audience
    )


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz"])
def test_internal_http_refuses_without_a_service_token(user_service, new_account, authorization):
    account = new_account()
    headers = {"Authorization": authorization} if authorization else {}
    response = user_service.get(f"/internal/users/{account.id}", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_a_users_access_token_is_not_a_service_token(user_service, new_account):
    account = new_account()
    assert user_service.get(f"/internal/users/{account.id}", headers=account.headers).status_code == 401


def test_a_service_token_for_another_service_is_refused(user_service, target, new_account):
    account = new_account()
    token = service_token(target, audience="order-service")
    response = user_service.get(f"/internal/users/{account.id}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_a_valid_service_token_is_accepted(user_service, target, new_account):
    account = new_account()
    token = service_token(target)
    response = user_service.get(f"/internal/users/{account.id}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["email"] == account.email


def test_grpc_refuses_without_a_service_token(target):
    target.need("user_service_grpc")
    with grpc.insecure_channel(target.user_service_grpc) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.GetUser(user_pb2.GetUserRequest(id=str(uuid.uuid4())), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_developer_service_token_of_the_readme_opens_the_event_store(target, tmp_path):
    """`python -m devstack service-token --audience event-store`, as docs/architecture.md's
    walkthrough uses it against the event store's HTTP API."""
    target.need("service_jwt_secret", "ports")
    (tmp_path / ".env").write_text(f"SERVICE_JWT_SECRET={target.service_jwt_secret}\n")
    made = subprocess.run(
        [sys.executable, "-m", "devstack", "service-token", "--audience", "event-store", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    token = made.stdout.strip()
    url = f"{target.ports.url('event-store', 8004)}/streams/order-{uuid.uuid4()}/events"
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code != 401, response.text
    assert response.status_code < 500
