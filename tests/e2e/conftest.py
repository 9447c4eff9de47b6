"""The stack under test, started once per session, driven only over real sockets.

Three ways to get one:
- by default the session starts every service of docker-compose.yml as a local
  process (devstack) on free ports, with its own databases and Redis key prefix;
- with E2E_STACK=compose (``make compose-test``) it starts a private Docker engine,
  builds stand-ins for the images this machine cannot pull (devstack.standins), and
  runs ``make up``'s Docker branch in it: every image built from its Dockerfile, the
  deployment in containers, tests/containers/docker-compose.test.yml layered on;
- with E2E_STACK=swarm (``make swarm-test``) the same engine becomes a single-node
  swarm and runs deploy/swarm/stack.yml (tests/containers/swarm.test.yml layered on)
  from images built here; only the gateway is reachable, through the stack's edge,
  and test_rolling_update.py rolls every service to a new image last;
- with E2E_GATEWAY_URL it drives that gateway (a stack someone else started); tests
  that need to reach behind the gateway then also need E2E_USER_SERVICE_URL,
  E2E_USER_SERVICE_GRPC and E2E_SERVICE_JWT_SECRET, and skip (saying so) without them.
The first two are torn down at the end whatever happened (compose's volumes too).
Tests that need the native stack's processes skip under the others.
"""

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis import Redis

from devstack.accounts import Account, register, sign_in
from devstack.compose import PublishedPorts, read_env_file
from devstack.composed import compose_deployment
from devstack.engine import engine_unavailable, private_engine
from devstack.mailpit import MailpitMailbox
from devstack.mailsink import Mailbox
from devstack.otlp import SpanRecord, fetch_spans
from devstack.secrets import JWT_KEY_FILE
from devstack.shop import NOTIFICATION_INSTANCES
from devstack.stack import Stack
from devstack.standins import ensure_standins, table_text
from devstack.swarm import STACK_FILE
from devstack.swarmed import SwarmDeployment, swarm_deployment
from devstack.testing import gateway_client, isolated_stack, run_id

ROOT = Path(__file__).resolve().parents[2]
RETRY_DELAYS = "0.5,1,2"
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE_OVERRIDE = ROOT / "tests" / "containers" / "docker-compose.test.yml"
SWARM_OVERRIDE = ROOT / "tests" / "containers" / "swarm.test.yml"
STANDINS = pytest.StashKey[str]()
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PRIVATE_KEY(?!_FILE)")
_WHY = {
    "the stack under test": " (set the E2E_* variables)",
    "the native stack": " (make compose-test runs this against the containers)",
    "the compose deployment": " (only the native stack's processes have them)",
    "the swarm stack": " (only its gateway is reachable, through the edge; make e2e and make compose-test run this)",
}


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
    # Where each service's container ports are published (native stack or compose).
    ports: PublishedPorts | None = None
    stack: Stack | None = None
    # Behind the scenes, for tests of the messaging backbone.
    rabbitmq_url: str | None = None
    events_exchange: str | None = None
    mail: Mailbox | None = None
    # Each of our services' log so far, by instance name (gateway, order-service-2 …).
    logs: Callable[[], dict[str, str]] | None = None
    # The deployment's own secrets, which no log may hold.
    secrets: frozenset[str] | None = None
    # A command in a new container of the image a service runs (compose only).
    in_image: Callable[..., subprocess.CompletedProcess[str]] | None = None
    # Restart one service (redis, ...) and wait until it is healthy (compose only:
    # natively the servers are the machine's own).
    restart: Callable[[str], None] | None = None
    # Every span the deployment exported so far (devstack.otlp's receiver).
    spans: Callable[[], list[SpanRecord]] | None = None
    # The deployment under an orchestrator, which can roll every service to a new image.
    swarm: SwarmDeployment | None = None
    kind: str = "the stack under test"

    def need(self, *fields: str) -> None:
        missing = [name for name in fields if getattr(self, name) is None]
        if missing:
            pytest.skip(f"{self.kind} does not expose {', '.join(missing)}{_WHY.get(self.kind, '')}")


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
                    "RATE_LIMIT_REQUESTS": "100000",
                    "AUTH_RATE_LIMIT_REQUESTS": "10000",
                    # test_slow_clients waits this out.
                    "REQUEST_BODY_TIMEOUT_SECONDS": "2",
                },
                # Short retries, so that a poison message reaches the dead letters quickly.
                **{instance: {"RETRY_DELAYS": RETRY_DELAYS} for instance in NOTIFICATION_INSTANCES},
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
                ports=stack,
                stack=stack,
                logs=lambda: {log.stem: log.read_text() for log in log_dir.glob("*.log")},
                secrets=frozenset(
                    value
                    for service in stack.services
                    for name, value in service.environment.items()
                    if SECRET_NAME.search(name) and len(value) >= 8
                ),
                rabbitmq_url=infra.rabbitmq_url,
                events_exchange=stack.environment("event-store")["EVENTS_EXCHANGE"],
                mail=stack.mail,
                spans=stack.traces.spans if stack.traces is not None else None,
                kind="the native stack",
            )
    finally:
        redis = Redis.from_url(infra.redis_url)
        keys = list(redis.scan_iter(match=f"*{prefix}*"))
        if keys:
            redis.delete(*keys)
        redis.close()


def _composed(config, tmp_path_factory) -> Iterator[Target]:
    reason = engine_unavailable()
    if reason is not None:
        pytest.skip(f"no private Docker engine can start here: {reason}")
    env = read_env_file(ROOT / ".env")
    with private_engine() as engine:
        substitutes = ensure_standins(engine=engine, root=ROOT, compose_files=[ROOT / "docker-compose.yml"])
        config.stash[STANDINS] = table_text(substitutes)
        log = tmp_path_factory.mktemp("compose") / "compose-up.log"
        with compose_deployment(engine=engine, root=ROOT, log=log, overrides=[COMPOSE_OVERRIDE]) as deployment:
            ports = deployment.ports
            yield Target(
                gateway_url=deployment.url("gateway", 8080),
                admin_email=env["ADMIN_EMAIL"],
                admin_password=env["ADMIN_PASSWORD"],
                user_service_url=deployment.url("user-service", 8001),
                user_service_grpc=f"127.0.0.1:{deployment.port('user-service', 50051)}",
                service_jwt_secret=env["SERVICE_JWT_SECRET"],
                signing_key=ROOT / JWT_KEY_FILE,
                rabbitmq_url=(
                    f"amqp://{env['RABBITMQ_USER']}:{env['RABBITMQ_PASSWORD']}@127.0.0.1:{ports['RABBITMQ_HOST_PORT']}/"
                ),
                events_exchange=env.get("EVENTS_EXCHANGE", "interchange.events"),
                mail=MailpitMailbox(url=f"http://127.0.0.1:{ports['MAILPIT_HOST_PORT']}"),
                ports=deployment,
                logs=lambda: deployment.logs(dict.fromkeys(instance for instance, _ in deployment.published)),
                secrets=frozenset(value for name, value in env.items() if SECRET_NAME.search(name) and len(value) >= 8),
                in_image=deployment.run_in_image,
                restart=deployment.restart,
                spans=lambda: fetch_spans(f"http://127.0.0.1:{ports['TRACE_RECEIVER_HOST_PORT']}"),
                kind="the compose deployment",
            )


def _swarmed(config) -> Iterator[Target]:
    reason = engine_unavailable()
    if reason is not None:
        pytest.skip(f"no private Docker engine can start here: {reason}")
    env = read_env_file(ROOT / ".env")
    with private_engine() as engine:
        files = [ROOT / "docker-compose.yml", ROOT / STACK_FILE]
        config.stash[STANDINS] = table_text(ensure_standins(engine=engine, root=ROOT, compose_files=files))
        with swarm_deployment(engine=engine, root=ROOT, overrides=[SWARM_OVERRIDE]) as deployment:
            yield Target(
                gateway_url=deployment.gateway_url,
                admin_email=env["ADMIN_EMAIL"],
                admin_password=env["ADMIN_PASSWORD"],
                secrets=frozenset(value for name, value in env.items() if SECRET_NAME.search(name) and len(value) >= 8),
                swarm=deployment,
                kind="the swarm stack",
            )


@pytest.fixture(scope="session")
def target(request, tmp_path_factory) -> Iterator[Target]:
    if os.environ.get("E2E_STACK") == "compose":
        yield from _composed(request.config, tmp_path_factory)
        return
    if os.environ.get("E2E_STACK") == "swarm":
        yield from _swarmed(request.config)
        return
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
    with gateway_client(target.gateway_url, timeout=10) as client:
        yield client


@pytest.fixture
def new_account(gateway):
    def make(name: str = "E2E User") -> Account:
        return register(gateway, name=name)

    return make


@pytest.fixture(scope="session")
def admin(gateway, target) -> Account:
    return sign_in(gateway, email=target.admin_email, password=target.admin_password)


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.e2e)
    # The rolling update replaces every task of the deployment: after everything else.
    items.sort(key=lambda item: item.path.name == "test_rolling_update.py")


_NOT_RUN = {
    "compose": (
        "Consul was not exercised: discovery was static.",
        "The observability profile (collector, Jaeger, Prometheus, Grafana) was not run:"
        " spans went to devstack's OTLP receiver in a container (trace-receiver).",
    ),
    "swarm": (
        "Consul was not exercised: discovery was Swarm's DNS (tasks.<service>).",
        "No collector ran in the stack: tracing was off.",
        "One node only: Swarm placed every task on it, and the edge's ports were that node's.",
    ),
}


def pytest_terminal_summary(terminalreporter, config):
    table = config.stash.get(STANDINS, None)
    if table is not None:
        terminalreporter.section("images: what ran in place of each (no registry here)")
        terminalreporter.write_line(table)
        for line in _NOT_RUN.get(os.environ.get("E2E_STACK", ""), ()):
            terminalreporter.write_line(line)
