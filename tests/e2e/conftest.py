"""The stack under test, started once per session, driven only over real sockets.

Without E2E_GATEWAY_URL the session starts every service of docker-compose.yml as
a local process (devstack) on free ports, with its own databases and Redis key
prefix, and tears it all down at the end whatever happened. With E2E_GATEWAY_URL
(for example a `docker compose up` stack) it drives that gateway instead; tests
that need to reach behind the gateway then also need E2E_USER_SERVICE_URL,
E2E_USER_SERVICE_GRPC and E2E_SERVICE_JWT_SECRET, and skip (saying so) without them.
"""

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from devstack.compose import read_env_file
from devstack.secrets import JWT_KEY_FILE
from devstack.stack import Stack
from devstack.testing import isolated_stack, run_id

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"


@dataclass
class Target:
    gateway_url: str
    admin_email: str
    admin_password: str
    user_service_url: str | None = None
    user_service_grpc: str | None = None
    service_jwt_secret: str | None = None
    signing_key: Path | None = None
    log_dir: Path | None = None
    stack: Stack | None = None

    def need(self, *fields: str) -> None:
        missing = [name for name in fields if getattr(self, name) is None]
        if missing:
            pytest.skip(f"the stack under test does not expose {', '.join(missing)} (set the E2E_* variables)")


def _native(infra, tmp_path_factory) -> Iterator[Target]:
    run = run_id()
    prefix = f"ic-e2e-{run}"
    log_dir = tmp_path_factory.mktemp("stack-logs")
    example = read_env_file(ENV_EXAMPLE)
    try:
        with isolated_stack(
            root=ROOT,
            infra=infra,
            run=run,
            purpose="e2e",
            log_dir=log_dir,
            # Generous limits for the suite; test_rate_limits starts gateways with tight ones.
            env_overrides={
                "gateway": {
                    "REDIS_KEY_PREFIX": prefix,
                    "RATE_LIMIT_REQUESTS": "100000",
                    "AUTH_RATE_LIMIT_REQUESTS": "10000",
                }
            },
        ) as stack:
            yield Target(
                gateway_url=stack.url("gateway", 8080),
                admin_email=example["ADMIN_EMAIL"],
                admin_password=example["ADMIN_PASSWORD"],
                user_service_url=stack.url("user-service", 8001),
                user_service_grpc=f"127.0.0.1:{stack.port('user-service', 50051)}",
                service_jwt_secret=example["SERVICE_JWT_SECRET"],
                signing_key=ROOT / JWT_KEY_FILE,
                log_dir=log_dir,
                stack=stack,
            )
    finally:
        redis = Redis.from_url(infra.redis_url)
        keys = list(redis.scan_iter(match=f"*{prefix}*"))
        if keys:
            redis.delete(*keys)
        redis.close()


@pytest.fixture(scope="session")
def target(request, tmp_path_factory) -> Iterator[Target]:
    url = os.environ.get("E2E_GATEWAY_URL")
    if url:
        example = read_env_file(ENV_EXAMPLE)
        key = os.environ.get("E2E_JWT_PRIVATE_KEY_FILE")
        yield Target(
            gateway_url=url.rstrip("/"),
            admin_email=os.environ.get("E2E_ADMIN_EMAIL", example["ADMIN_EMAIL"]),
            admin_password=os.environ.get("E2E_ADMIN_PASSWORD", example["ADMIN_PASSWORD"]),
            user_service_url=os.environ.get("E2E_USER_SERVICE_URL"),
            user_service_grpc=os.environ.get("E2E_USER_SERVICE_GRPC"),
            service_jwt_secret=os.environ.get("E2E_SERVICE_JWT_SECRET"),
            signing_key=Path(key) if key else None,
        )
        return
    yield from _native(request.getfixturevalue("infra"), tmp_path_factory)


@pytest.fixture(scope="session")
def gateway(target) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.gateway_url, timeout=10) as client:
        yield client


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class Account:
    id: str
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def login(gateway: httpx.Client, *, email: str, password: str) -> str:
    response = gateway.post("/api/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def new_account(gateway):
    def make(name: str = "E2E User") -> Account:
        email, password = unique_email(), f"pw-{uuid.uuid4().hex}"
        response = gateway.post("/api/auth/register", json={"name": name, "email": email, "password": password})
        assert response.status_code == 201, response.text
        return Account(response.json()["id"], email, password, login(gateway, email=email, password=password))

    return make


@pytest.fixture(scope="session")
def admin(gateway, target) -> Account:
    token = login(gateway, email=target.admin_email, password=target.admin_password)
    me = gateway.get("/api/users/me", headers={"Authorization": f"Bearer {token}"}).json()
    return Account(me["id"], target.admin_email, target.admin_password, token)


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.e2e)
