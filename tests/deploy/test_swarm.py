"""deploy/swarm/stack.yml: rendered from docker-compose.yml, current, accepted by
``docker stack config``, and shaped as docs/swarm.md says (what ``make swarm-test``
then deploys and rolls)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.compose import read_env_file
from devstack.swarm import EDGE_CONFIG, SECRET_VARIABLES, STACK_FILE, render_stack, stack_text, write_secret_files

ROOT = Path(__file__).resolve().parents[2]
OURS = ("user-service", "event-store", "order-service", "notification-service", "gateway")


@pytest.fixture(scope="module")
def stack():
    return yaml.safe_load((ROOT / STACK_FILE).read_text())


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_committed_stack_is_what_docker_compose_yml_renders():
    assert (ROOT / STACK_FILE).read_text() == stack_text(root=ROOT), (
        f"{STACK_FILE} is stale: run `python -m devstack swarm render` and commit it"
    )


@pytest.fixture(scope="module")
def stack_config():
    """``docker stack config``'s command, which validates a stack without an engine."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI here to validate the stack with")
    help_text = subprocess.run(["docker", "stack", "--help"], capture_output=True, text=True, check=False).stdout
    if "config" not in help_text:
        pytest.skip("this docker CLI has no `docker stack config` (Docker 23 and later)")
    return ["docker", "stack", "config", "--compose-file"]


def test_docker_stack_config_accepts_it(stack_config, tmp_path):
    environ = {**read_env_file(ROOT / ".env.example"), "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run(
        [*stack_config, str(ROOT / STACK_FILE)],
        capture_output=True,
        text=True,
        check=False,
        env={**environ, "IMAGE_TAG": "checked"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    assert merged["services"]["gateway"]["image"] == "interchange/gateway:checked"


def test_docker_stack_config_refuses_the_compose_file_itself(stack_config):
    """Why the stack is rendered: the compose file as it is cannot be deployed."""
    result = subprocess.run(
        [*stack_config, "docker-compose.yml"],
        capture_output=True,
        text=True,
        check=False,
        env={**read_env_file(ROOT / ".env.example"), "PATH": os.environ["PATH"]},
        cwd=ROOT,
    )
    assert result.returncode != 0
    # mem_limit (forbidden in a stack), profiles, depends_on's conditions.
    assert "forbidden properties" in result.stderr or "not allowed" in result.stderr, result.stderr


def test_only_the_edge_publishes_ports_and_every_service_resolves_by_dns(stack):
    published = {name for name, service in stack["services"].items() if service.get("ports")}
    assert published == {"edge"}
    assert all(port["mode"] == "host" for port in stack["services"]["edge"]["ports"])
    assert stack["services"]["edge"]["deploy"]["mode"] == "global"
    assert {service["deploy"]["endpoint_mode"] for service in stack["services"].values()} == {"dnsrr"}


def test_ours_run_two_tasks_at_least_and_roll_start_first(stack):
    for name in OURS:
        deploy = stack["services"][name]["deploy"]
        assert deploy["replicas"] >= 2, name
        assert deploy["update_config"]["order"] == "start-first", name
        assert deploy["update_config"]["failure_action"] == "rollback", name
        # Time for every caller to learn of the new task before the next old one drains.
        assert deploy["update_config"]["delay"] == "15s", name
        assert deploy["resources"]["limits"]["memory"], name
        assert stack["services"][name]["image"] == f"interchange/{name}:${{IMAGE_TAG:-latest}}"
        # Longer than the drain and the servers' graceful shutdown (about 19 s).
        assert stack["services"][name]["stop_grace_period"] == "30s"


def test_no_twin_and_no_profile_service_is_left(stack, compose):
    names = set(stack["services"])
    assert not any(name.endswith("-2") for name in names)
    assert not names & {name for name, spec in compose["services"].items() if spec.get("profiles")}
    assert names - {"edge"} == {
        name for name, spec in compose["services"].items() if not spec.get("profiles") and not name.endswith("-2")
    }


def test_tracing_is_the_operators_to_turn_on(stack):
    """The collector is in the observability profile, which the stack leaves out."""
    for name in OURS:
        endpoint = stack["services"][name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}", name


def test_the_definitions_load_as_a_job(stack):
    job = stack["services"]["rabbitmq-definitions"]
    assert job["deploy"]["mode"] == "replicated-job"
    assert job["deploy"]["restart_policy"]["condition"] == "on-failure"
    assert "--netrc-file" in job["command"]
    assert "--user" not in job["command"]


def test_no_secret_is_in_the_environment_and_each_becomes_a_secret(stack, compose):
    text = (ROOT / STACK_FILE).read_text()
    for variable in SECRET_VARIABLES:
        assert f"${{{variable}" not in text, variable
    for name, spec in compose["services"].items():
        if spec.get("profiles") or name.endswith("-2") or "build" not in spec:
            continue
        rendered = stack["services"][name]
        mounted = {s["target"] if isinstance(s, dict) else s for s in rendered.get("secrets", [])}
        for key, value in spec["environment"].items():
            if any(f"${{{variable}" in str(value) for variable in SECRET_VARIABLES):
                assert key not in rendered["environment"], (name, key)
                assert key.lower() in mounted, (name, key)
            else:
                assert key in rendered["environment"], (name, key)
    assert stack["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"


def test_callers_find_every_task_through_swarm_dns(stack):
    gateway = stack["services"]["gateway"]["environment"]
    assert gateway["DISCOVERY"] == "tasks"
    assert gateway["ORDER_SERVICE_URL"] == "http://tasks.order-service:8002"
    assert gateway["USER_SERVICE_URL"] == "http://tasks.user-service:8001"
    assert gateway["NOTIFICATION_SERVICE_URL"] == "http://tasks.notification-service:8003"
    assert stack["services"]["order-service"]["environment"]["EVENT_STORE_URL"] == "grpc://tasks.event-store:50054"
    assert "server-template gateway" in (ROOT / EDGE_CONFIG).read_text()
    assert "tasks.gateway:8080" in (ROOT / EDGE_CONFIG).read_text()


def test_the_secret_files_hold_envs_values(tmp_path):
    (tmp_path / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    for folder in ("infra", "deploy"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    variables = {"POSTGRES_PASSWORD": "pg-secret", "RABBITMQ_PASSWORD": "mq-secret", "SERVICE_JWT_SECRET": "jwt",
                 "ADMIN_PASSWORD": "admin-secret", "ADMIN_EMAIL": "a@example.com"}  # fmt: skip
    written = {path.name: path for path in write_secret_files(root=tmp_path, variables=variables)}
    assert written["postgres_password"].read_text() == "pg-secret"
    assert written["order_service_database_url"].read_text() == (
        "postgresql+asyncpg://interchange:pg-secret@postgres:5432/interchange_orders"
    )
    assert written["rabbitmq_netrc"].read_text() == "machine rabbitmq login interchange password mq-secret\n"
    assert "default_pass = mq-secret" in written["rabbitmq_default_user"].read_text()
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in written.values())
    _, secrets = render_stack(compose_text=(ROOT / "docker-compose.yml").read_text(), root=ROOT)
    assert set(written) == {secret.name for secret in secrets}
