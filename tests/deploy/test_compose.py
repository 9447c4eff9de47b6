"""docker-compose.yml, the Dockerfiles and the native runner agree, checked offline."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack.compose import (
    AddressMap,
    application_services,
    default_ports,
    load_compose,
    native_services,
    network_aliases,
    parse_ports,
    read_env_file,
    secret_files,
)
from devstack.infra import Infra

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CONSUL = ROOT / "docker-compose.consul.yml"
# The longest a service may take to stop after SIGTERM: DRAIN_SECONDS at most (its
# default 2 s; 19 s is its worst case seen in the fault suite), then the HTTP server's
# 10 s and gRPC's 5 s graceful shutdowns.
SLOWEST_STOP_SECONDS = 19
ENV_EXAMPLE = ROOT / ".env.example"
INFRA = Infra(
    postgres_url="postgresql://pg-user@10.1.2.3:6543/postgres",
    redis_url="redis://10.1.2.4:7379/0",
    rabbitmq_url="amqp://mq:mq@10.1.2.5:6672/",
)


@pytest.fixture(scope="module")
def document():
    return load_compose(compose_file=COMPOSE, env_file=ENV_EXAMPLE, environ={})


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.mark.parametrize("compose_file", [COMPOSE, CONSUL], ids=lambda p: p.name)
def test_the_compose_files_match_the_compose_spec_schema(compose_file):
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(compose_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose_config(*files: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian's docker-compose package) is not installed")
    arguments = [argument for path in files for argument in ("-f", str(path))]
    return subprocess.run(
        ["docker-compose", *arguments, "--env-file", str(ENV_EXAMPLE), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_docker_compose_config_accepts_the_file():
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr
    assert "consul" not in yaml.safe_load(result.stdout)["services"]


def test_the_consul_file_registers_every_instance_and_the_gateway_discovers_through_it(raw):
    result = compose_config(COMPOSE, CONSUL)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in (name for name, spec in raw["services"].items() if "build" in spec):
        assert services[name]["environment"]["CONSUL_HTTP_ADDR"] == "consul:8500", name
        assert services[name]["depends_on"]["consul"] == {"condition": "service_healthy"}, name
        assert len(services[name]["depends_on"]) > 1, name  # its own dependencies kept
    assert services["gateway"]["environment"]["DISCOVERY"] == "consul"
    assert raw["services"]["gateway"]["environment"]["DISCOVERY"] == "static"


def test_env_example_runs_both_files():
    files = read_env_file(ENV_EXAMPLE)["COMPOSE_FILE"].split(":")
    assert files == [COMPOSE.name, CONSUL.name]


def one_shot_jobs(raw) -> set[str]:
    """Services that run to completion (loading definitions, say): others wait for them to finish."""
    return {
        dependency
        for spec in raw["services"].values()
        for dependency, condition in spec.get("depends_on", {}).items()
        if condition == {"condition": "service_completed_successfully"}
    }


def test_every_long_running_service_has_a_healthcheck(raw):
    jobs = one_shot_jobs(raw)
    missing = [
        name for name, spec in raw["services"].items() if name not in jobs and "test" not in spec.get("healthcheck", {})
    ]
    assert missing == []
    assert jobs == {"rabbitmq-definitions"}
    assert all("ports" not in raw["services"][job] for job in jobs)


def test_long_running_services_restart_rotate_logs_and_have_memory_limits(raw):
    jobs = one_shot_jobs(raw)
    for name, spec in raw["services"].items():
        assert "mem_limit" in spec, name
        if name in jobs:
            assert "restart" not in spec, name
            continue
        assert spec["restart"] == "unless-stopped", name
        assert spec["logging"]["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= set(spec["logging"]["options"]), name


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, duration
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def test_our_services_get_longer_to_stop_than_their_drain_and_grace(raw):
    for name, spec in raw["services"].items():
        if "build" in spec:
            assert _seconds(spec["stop_grace_period"]) > SLOWEST_STOP_SECONDS, name


def test_each_healthcheck_lives_in_one_place(raw):
    """In the compose file, never also in a Dockerfile (whose timing compose would hide)."""
    for dockerfile in ROOT.glob("*/Dockerfile"):
        assert "HEALTHCHECK" not in dockerfile.read_text(), dockerfile


@pytest.mark.parametrize("compose_file", [COMPOSE, CONSUL], ids=lambda p: p.name)
def test_upstream_images_are_pinned_to_exact_versions(compose_file):
    services = yaml.safe_load(compose_file.read_text())["services"]
    images = [spec["image"] for spec in services.values() if "image" in spec]
    assert images
    for image in images:
        # PostgreSQL's releases are major.minor (16.15); the others' major.minor.patch.
        exact = r"\d+\.\d+" if image.startswith("postgres:") else r"v?\d+\.\d+\.\d+"
        assert re.search(rf":{exact}(-[a-z]+)*$", image), image


def test_production_images_carry_no_reload_tool():
    """uvicorn[standard] would install watchfiles (a development reloader) in every image."""
    for pyproject in ROOT.glob("*/pyproject.toml"):
        assert "uvicorn[standard]" not in pyproject.read_text(), pyproject


def test_the_gateway_image_carries_no_grpc():
    """The gateway speaks only HTTP: it installs the internal library without its grpc
    extra, and its code never imports gRPC or protobuf."""
    declared = (ROOT / "gateway" / "pyproject.toml").read_text()
    assert "grpc" not in declared
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, gateway.bootstrap, gateway.entrypoints.cli;"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('grpc', 'google.protobuf'))}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def test_only_the_gateway_listens_beyond_loopback(raw):
    for name, spec in raw["services"].items():
        for port in spec.get("ports", []):
            assert name == "gateway" or str(port).startswith("127.0.0.1:"), (name, port)


def test_every_dependency_waits_for_health_or_completion(raw):
    jobs = one_shot_jobs(raw)
    for name, spec in raw["services"].items():
        for dependency, condition in spec.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency in jobs else "service_healthy"
            assert condition == {"condition": wanted}, (name, dependency)
            assert dependency in raw["services"]


def test_every_build_context_and_dockerfile_exists(raw):
    builds = {name: spec["build"] for name, spec in raw["services"].items() if "build" in spec}
    assert set(builds) >= {"gateway", "user-service"}
    for name, build in builds.items():
        context = ROOT / build["context"]
        assert context.is_dir(), name
        assert (context / build["dockerfile"]).is_file(), name


def test_the_built_images_are_the_service_folders(raw):
    dockerfiles = {spec["build"]["dockerfile"] for spec in raw["services"].values() if "build" in spec}
    folders = {f"{path.parent.name}/Dockerfile" for path in ROOT.glob("*/Dockerfile")}
    assert dockerfiles == folders


@pytest.mark.parametrize("dockerfile", sorted(ROOT.glob("*/Dockerfile")), ids=lambda p: p.parent.name)
def test_images_are_multi_stage_non_root_and_hold_no_secret(dockerfile):
    text = dockerfile.read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.M)) >= 2
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users
    assert users[-1] not in ("root", "0")
    assert not re.search(r"(SECRET|PASSWORD|PRIVATE_KEY)\s*=", text)
    assert ".env" not in re.findall(r"^COPY (\S+)", text, flags=re.M)


def test_secrets_come_from_env_or_secret_files(raw):
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE.read_text()))
    example = read_env_file(ENV_EXAMPLE)
    assert required <= set(example), required - set(example)
    for name, value in example.items():
        if any(word in name for word in ("SECRET", "PASSWORD")):
            assert value.startswith("dev-only-"), name
    for name in raw.get("secrets", {}):
        assert raw["secrets"][name]["file"].startswith("./.secrets/")
    assert ".secrets/" in (ROOT / ".gitignore").read_text()
    assert ".env\n" in (ROOT / ".gitignore").read_text()


def test_the_native_runner_runs_what_compose_runs(document):
    addresses = AddressMap(
        infra_urls={"postgres": INFRA.postgres_url, "redis": INFRA.redis_url, "rabbitmq": INFRA.rabbitmq_url},
        ports=default_ports(document),
        secret_files=secret_files(document=document, root=ROOT),
        aliases=network_aliases(document),
    )
    native = {service.name: service for service in native_services(document=document, addresses=addresses)}
    composed = application_services(document)
    assert set(native) == set(composed)
    for name, spec in composed.items():
        service = native[name]
        assert service.command == spec["command"]
        assert set(service.environment) == set(spec["environment"]) | {"HOST"}
        assert service.ports == parse_ports(spec["ports"])
    # The same values, with container addresses replaced by this machine's.
    users, gateway = native["user-service"].environment, native["gateway"].environment
    assert users["DATABASE_URL"] == "postgresql+asyncpg://pg-user@10.1.2.3:6543/interchange_users"
    assert users["JWT_PRIVATE_KEY_FILE"] == str(ROOT / ".secrets/jwt-private.pem")
    assert users["HTTP_PORT"] == "8001"
    assert gateway["REDIS_URL"] == "redis://10.1.2.4:7379/0"
    assert gateway["USER_SERVICE_URL"] == "http://127.0.0.1:8001,http://127.0.0.1:8011"
    assert gateway["SERVICE_JWT_SECRET"] == composed["gateway"]["environment"]["SERVICE_JWT_SECRET"]
    assert native["gateway"].health_url == "http://127.0.0.1:8080/health/live"
    assert native["gateway"].depends_on == [
        "user-service",
        "user-service-2",
        "order-service",
        "order-service-2",
        "notification-service",
        "notification-service-2",
    ]
    assert gateway["TLS_CERT_FILE"] == str(ROOT / ".secrets/tls-cert.pem")
    # Two notification instances: the same program and settings on ports of their own,
    # and the gateway knows both.
    first, second = native["notification-service"], native["notification-service-2"]
    assert second.command == first.command
    assert {key: value for key, value in second.environment.items() if not key.endswith("_PORT")} == {
        key: value for key, value in first.environment.items() if not key.endswith("_PORT")
    }
    assert (first.environment["HTTP_PORT"], second.environment["HTTP_PORT"]) == ("8003", "8013")
    assert (first.environment["TCP_PORT"], second.environment["TCP_PORT"]) == ("9000", "9010")
    assert gateway["NOTIFICATION_SERVICE_URL"] == "http://127.0.0.1:8003,http://127.0.0.1:8013"
    assert native["order-service-2"].environment["HTTP_PORT"] == "8012"
    assert gateway["ORDER_SERVICE_URL"] == "http://127.0.0.1:8002,http://127.0.0.1:8012"
    # gRPC addresses are URLs too (grpc://host:port), so they follow the port map; the
    # alias both instances carry (tasks.event-store) stands for every instance.
    assert native["order-service"].environment["EVENT_STORE_URL"] == "grpc://127.0.0.1:50054,grpc://127.0.0.1:50064"
    assert native["notification-service"].environment["USER_SERVICE_URL"] == (
        "grpc://127.0.0.1:50051,grpc://127.0.0.1:50061"
    )
    assert native["user-service-2"].environment["GRPC_PORT"] == "50061"
    assert native["event-store-2"].environment["HTTP_PORT"] == "8014"


def test_the_native_runner_follows_a_port_map(document):
    ports = {key: 40000 + index for index, key in enumerate(sorted(default_ports(document)))}
    addresses = AddressMap(
        infra_urls={"postgres": INFRA.postgres_url, "redis": INFRA.redis_url, "rabbitmq": INFRA.rabbitmq_url},
        ports=ports,
        secret_files=secret_files(document=document, root=ROOT),
        database_name=lambda name: f"run1_{name}",
        aliases=network_aliases(document),
    )
    native = {service.name: service for service in native_services(document=document, addresses=addresses)}
    users = native["user-service"].environment
    assert users["HTTP_PORT"] == str(ports[("user-service", 8001)])
    assert users["GRPC_PORT"] == str(ports[("user-service", 50051)])
    assert users["DATABASE_URL"].endswith("/run1_interchange_users")
    assert native["gateway"].environment["USER_SERVICE_URL"] == ",".join(
        f"http://127.0.0.1:{ports[(name, 8001)]}" for name in ("user-service", "user-service-2")
    )
    orders = native["order-service"].environment
    assert orders["USER_SERVICE_URL"] == ",".join(
        f"grpc://127.0.0.1:{ports[(name, 50051)]}" for name in ("user-service", "user-service-2")
    )


def test_instances_left_out_leave_every_list_of_addresses(document):
    seconds = frozenset({"user-service-2", "event-store-2", "order-service-2", "notification-service-2"})
    addresses = AddressMap(
        infra_urls={"postgres": INFRA.postgres_url, "redis": INFRA.redis_url, "rabbitmq": INFRA.rabbitmq_url},
        ports=default_ports(document),
        secret_files=secret_files(document=document, root=ROOT),
        aliases=network_aliases(document),
        left_out=seconds,
    )
    native = {service.name: service for service in native_services(document=document, addresses=addresses)}
    assert not set(native) & seconds
    gateway, orders = native["gateway"].environment, native["order-service"].environment
    assert gateway["USER_SERVICE_URL"] == "http://127.0.0.1:8001"
    assert gateway["ORDER_SERVICE_URL"] == "http://127.0.0.1:8002"
    assert orders["EVENT_STORE_URL"] == "grpc://127.0.0.1:50054"
    assert native["notification-service"].environment["JWKS_URL"] == "http://127.0.0.1:8001/.well-known/jwks.json"
    assert native["gateway"].depends_on == ["user-service", "order-service", "notification-service"]
    assert gateway["CORS_ORIGINS"] == native["gateway"].compose_environment["CORS_ORIGINS"]


def test_the_postgres_init_script_creates_every_database_the_services_use(document):
    init = (ROOT / "infra/postgres/init/01-databases.sql").read_text()
    used = set(re.findall(r"postgres:5432/(\w+)", COMPOSE.read_text()))
    assert used
    for name in used:
        assert f"CREATE DATABASE {name};" in init
