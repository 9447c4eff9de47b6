"""The Docker Swarm stack, rendered from docker-compose.yml.

``docker stack deploy`` reads compose files but refuses what only compose knows
(``mem_limit``, ``profiles``, ``depends_on`` with conditions) and ignores ``build``,
``restart`` and the ``127.0.0.1:`` of a published port. So the stack file
(``deploy/swarm/stack.yml``) is made from docker-compose.yml by ``render_stack``, and a
deployment check fails when the committed file is not what it renders:

- one Swarm service per compose service: the ``-2`` twins become ``replicas: 2``; the
  observability profile is left out (Swarm has no profiles);
- our services run ``interchange/<service>:${IMAGE_TAG}``; their rolling updates start
  the new task before the old one stops (``order: start-first``), one at a time with
  time between for callers to learn of the new one, and roll back on failure; the stop
  grace period keeps room for the services' drain;
- a setting that names a service left out (the profile's collector) is left to the
  operator (``OTEL_EXPORTER_OTLP_ENDPOINT``: no tracing unless set);
- every service resolves by DNS round robin (``endpoint_mode: dnsrr``): callers balance
  per call over ``tasks.<service>`` themselves (the gateway's DISCOVERY=tasks, gRPC's
  round robin), which a virtual IP balancing per connection would defeat, and which
  needs no IPVS in the kernel;
- nothing of ours is published: an edge proxy (HAProxy, one per node, its ports on the
  node) follows ``tasks.gateway`` and is the stack's only door;
- secrets are Swarm secrets, each from a file that ``write_secret_files`` makes from
  .env; our services read them from /run/secrets (their settings' secrets directory),
  PostgreSQL from ``*_FILE``, RabbitMQ from a configuration file, curl from a netrc;
- the RabbitMQ definitions load as a ``replicated-job``;
- files the services read (the database init script, the definitions, the edge's
  configuration) are Swarm configs, so that no node needs the repository; each is
  named after its content's hash, since Swarm cannot change a config in place.

    render_stack()        the stack document and the secrets it names
    stack_text()          the committed file's text
    write_secret_files()  the secret files the stack names, from .env
"""

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from devstack.compose import interpolate
from devstack.errors import ComposeError

STACK_FILE = Path("deploy/swarm/stack.yml")
EDGE_CONFIG = Path("deploy/swarm/haproxy.cfg")
# The generated secret files (git-ignored, like the rest of .secrets/).
SECRETS_DIR = Path(".secrets/swarm")
EDGE_IMAGE = "haproxy:3.2.9-alpine"
MIN_REPLICAS = 2
# Variables that hold secrets: an environment value naming one becomes a Swarm secret.
SECRET_VARIABLES = ("SERVICE_JWT_SECRET", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "ADMIN_PASSWORD")
_UP = "../.."  # from deploy/swarm/ to the repository, for the stack's file paths
_SECRETS_MOUNT = "/run/secrets/"
_RABBITMQ_USER_FILE = "/etc/rabbitmq/conf.d/10-default-user.conf"
# One task at a time, the new one first; 15 s between tasks: a caller learns of a new
# task when its old one's connections close (gRPC resolves the name again then), after
# the drain and the servers' graceful stop (about 8 s): replace the next task sooner
# and a caller can be left knowing only tasks that are draining.
_ROLLING = {"parallelism": 1, "delay": "15s", "order": "start-first", "failure_action": "rollback", "monitor": "10s"}
_STOP_FIRST = {"parallelism": 1, "order": "stop-first"}
_HEADER = """\
# Interchange on Docker Swarm. GENERATED from docker-compose.yml by
# `python -m devstack swarm render` (infra/devstack/src/devstack/swarm.py): change
# docker-compose.yml and render again; `make test` fails while this file is stale.
# How to deploy it and what was tested: docs/swarm.md. In short:
#
#   python -m devstack swarm secrets        # .secrets/swarm/*, from .env
#   set -a; . ./.env; set +a
#   IMAGE_TAG=<tag> docker stack deploy --resolve-image never \\
#       -c deploy/swarm/stack.yml interchange
"""


@dataclass(frozen=True, slots=True)
class StackSecret:
    """A Swarm secret the stack makes from a file: ``template`` with .env's values filled in."""

    name: str
    template: str


def _instance_of(name: str, services: Mapping[str, Any]) -> str | None:
    """The service a twin (``user-service-2``) is an instance of; None for the rest."""
    base, _, number = name.rpartition("-")
    return base if number.isdigit() and base in services else None


def _tasks_url(value: str, *, replicas: Mapping[str, int]) -> str:
    """A list of URLs naming the instances of one service (``http://user-service:8001,
    http://user-service-2:8001``) becomes one URL naming ``tasks.<service>``, which
    Swarm's DNS resolves to every task; anything else stays as it is."""
    parts = [urlsplit(url.strip()) for url in value.split(",")]
    if not all(part.scheme and part.hostname for part in parts):
        return value
    named = {part.hostname or "" for part in parts}
    services = {_instance_of(host, replicas) or host for host in named}
    if len(services) != 1 or len(parts) < 2:
        return value
    (service,) = services
    first = parts[0]
    netloc = f"tasks.{service}" + (f":{first.port}" if first.port else "")
    return urlunsplit((first.scheme, netloc, first.path, first.query, first.fragment))


def _names_a_secret(value: str) -> bool:
    return any(f"${{{variable}" in value for variable in SECRET_VARIABLES)


def _snake(name: str) -> str:
    return name.replace("-", "_")


class _Renderer:
    def __init__(self, *, document: dict[str, Any], root: Path) -> None:
        compose_services: dict[str, Any] = document["services"]
        # Swarm has no profiles: their services are not part of the stack.
        self.services = {name: spec for name, spec in compose_services.items() if not spec.get("profiles")}
        self.left_out = set(compose_services) - set(self.services)
        self.replicas = {name: 1 for name in self.services if _instance_of(name, self.services) is None}
        for name in self.services:
            base = _instance_of(name, self.services)
            if base is not None:
                self.replicas[base] += 1
        self.document = document
        self.root = root
        self.secrets: dict[str, StackSecret] = {}
        self.configs: dict[str, dict[str, str]] = {}
        # A value every service shares (SERVICE_JWT_SECRET) is one secret; one that
        # differs (each DATABASE_URL) is a secret per service.
        self.values: dict[str, set[str]] = {}
        for spec in self.services.values():
            for key, value in (spec.get("environment") or {}).items():
                if isinstance(value, str) and _names_a_secret(value):
                    self.values.setdefault(key, set()).add(value)

    def _names_a_left_out_service(self, value: str) -> bool:
        host = urlsplit(value).hostname if "://" in value else None
        return host is not None and host in self.left_out

    def secret(self, *, name: str, template: str) -> str:
        self.secrets[name] = StackSecret(name=name, template=template)
        return name

    def config(self, *, name: str, path: str) -> str:
        # Swarm cannot change a config: a changed file gets a new name (its content's
        # hash), which the next deploy creates and rolls the services onto.
        digest = hashlib.sha256((self.root / path).read_bytes()).hexdigest()[:12]
        self.configs[name] = {"name": f"interchange_{name}_{digest}", "file": f"{_UP}/{path}"}
        return name

    def service(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        ours = "build" in spec
        rendered: dict[str, Any] = {"image": f"interchange/{name}:${{IMAGE_TAG:-latest}}" if ours else spec["image"]}
        environment: dict[str, str] = {}
        secrets: list[Any] = []
        for key, raw in (spec.get("environment") or {}).items():
            value = str(raw)
            if name == "rabbitmq" and key.startswith("RABBITMQ_DEFAULT_"):
                continue  # in the configuration file below
            if _names_a_secret(value):
                shared = len(self.values[key]) == 1
                secret = self.secret(name=key.lower() if shared else f"{_snake(name)}_{key.lower()}", template=value)
                secrets.append({"source": secret, "target": key.lower()})
                if not ours:
                    # The official images' convention: <VARIABLE>_FILE names the file.
                    environment[f"{key}_FILE"] = f"{_SECRETS_MOUNT}{key.lower()}"
                continue
            if self._names_a_left_out_service(value):
                # The collector of the observability profile is not in the stack: tracing
                # is off unless the operator names a collector of theirs.
                environment[key] = f"${{{key}:-}}"
                continue
            environment[key] = "tasks" if key == "DISCOVERY" else _tasks_url(value, replicas=self.replicas)
        command = list(spec.get("command") or [])
        if name == "rabbitmq":
            compose_environment = spec.get("environment") or {}
            template = (
                f"default_user = {compose_environment.get('RABBITMQ_DEFAULT_USER', 'guest')}\n"
                f"default_pass = {compose_environment.get('RABBITMQ_DEFAULT_PASS', 'guest')}\n"
            )
            secrets.append({"source": self.secret(name="rabbitmq_default_user", template=template),
                            "target": _RABBITMQ_USER_FILE})  # fmt: skip
        if "--user" in command:
            # curl's user and password on its command line would show in `docker service inspect`.
            at = command.index("--user")
            user, _, password = str(command[at + 1]).rpartition(":")
            template = f"machine rabbitmq login {user} password {password}\n"
            secrets.append(
                {"source": self.secret(name="rabbitmq_netrc", template=template), "target": "rabbitmq_netrc"}
            )
            command[at : at + 2] = ["--netrc-file", f"{_SECRETS_MOUNT}rabbitmq_netrc"]
        if command:
            rendered["command"] = command
        if environment:
            rendered["environment"] = environment
        secrets += list(spec.get("secrets") or [])
        if secrets:
            rendered["secrets"] = secrets
        volumes, configs = self.files(name, spec.get("volumes") or [])
        if volumes:
            rendered["volumes"] = volumes
        if configs:
            rendered["configs"] = configs
        for key in ("healthcheck", "stop_grace_period", "logging"):
            if key in spec:
                rendered[key] = spec[key]
        rendered["deploy"] = self.deploy(name, spec, ours=ours)
        return rendered

    def files(self, name: str, volumes: list[str]) -> tuple[list[str], list[dict[str, str]]]:
        """Named volumes stay; a file or folder of the repository becomes Swarm configs."""
        kept, configs = [], []
        for volume in volumes:
            source, _, rest = volume.partition(":")
            target = rest.removesuffix(":ro")
            if not source.startswith("./"):
                kept.append(volume)
                continue
            path = source.removeprefix("./")
            if (self.root / path).is_dir():
                for file in sorted((self.root / path).iterdir()):
                    config = self.config(name=f"{_snake(name)}_{_snake(file.stem)}", path=f"{path}/{file.name}")
                    configs.append({"source": config, "target": f"{target}/{file.name}"})
            else:
                config = self.config(name=f"{_snake(name)}_{_snake(Path(path).stem)}", path=path)
                configs.append({"source": config, "target": target})
        return kept, configs

    def deploy(self, name: str, spec: dict[str, Any], *, ours: bool) -> dict[str, Any]:
        deploy: dict[str, Any] = {"endpoint_mode": "dnsrr"}
        if "restart" not in spec:
            # A one-shot job (compose runs it once; its dependants wait for it to succeed).
            deploy |= {"mode": "replicated-job", "restart_policy": {"condition": "on-failure", "delay": "5s"}}
        else:
            # Two of each of ours at least (the gateway too): one task keeps serving while
            # the other is replaced, or while its node is lost.
            replicas = max(self.replicas[name], MIN_REPLICAS) if ours else self.replicas[name]
            deploy |= {"replicas": replicas, "restart_policy": {"condition": "any", "delay": "5s"}}
            # Ours run side by side during an update; a server with its own volume cannot.
            deploy["update_config"] = dict(_ROLLING if ours else _STOP_FIRST)
            if ours:
                deploy["rollback_config"] = {"parallelism": 1, "order": "start-first"}
        if "mem_limit" in spec:
            deploy["resources"] = {"limits": {"memory": spec["mem_limit"]}}
        return deploy

    def edge(self) -> dict[str, Any]:
        """HAProxy on every node: the only published ports, in front of ``tasks.gateway``."""
        config = self.config(name="edge_haproxy", path=str(EDGE_CONFIG))
        return {
            "image": EDGE_IMAGE,
            "configs": [{"source": config, "target": "/usr/local/etc/haproxy/haproxy.cfg"}],
            "ports": [
                {"target": 8080, "published": "${EDGE_HTTP_PORT:-8080}", "protocol": "tcp", "mode": "host"},
                {"target": 8443, "published": "${EDGE_HTTPS_PORT:-8443}", "protocol": "tcp", "mode": "host"},
            ],
            "healthcheck": {"disable": True},
            "stop_grace_period": "30s",
            "logging": self.services["gateway"].get("logging", {}),
            "deploy": {
                "mode": "global",
                "endpoint_mode": "dnsrr",
                "restart_policy": {"condition": "any", "delay": "5s"},
                # Its ports are the node's: the old task must let go of them first.
                "update_config": dict(_STOP_FIRST),
                "resources": {"limits": {"memory": "128m"}},
            },
        }

    def stack(self) -> dict[str, Any]:
        services = {
            name: self.service(name, spec)
            for name, spec in self.services.items()
            if _instance_of(name, self.services) is None
        }
        services["edge"] = self.edge()
        named_volumes = {str(v).partition(":")[0] for s in services.values() for v in s.get("volumes", [])}
        file_secrets = {
            name: {"file": f"{_UP}/{spec['file'].removeprefix('./')}"}
            for name, spec in (self.document.get("secrets") or {}).items()
            if any(name in (s.get("secrets") or []) for s in services.values())
        }
        generated = {name: {"file": f"{_UP}/{SECRETS_DIR}/{name}"} for name in sorted(self.secrets)}
        return {
            "services": services,
            "networks": {"default": {"driver": "overlay"}},
            "volumes": {
                name: value for name, value in (self.document.get("volumes") or {}).items() if name in named_volumes
            },
            "configs": dict(sorted(self.configs.items())),
            "secrets": {**file_secrets, **generated},
        }


def render_stack(*, compose_text: str, root: Path) -> tuple[dict[str, Any], list[StackSecret]]:
    """The stack document for docker-compose.yml's text, and the secrets it makes from .env."""
    document = yaml.safe_load(compose_text)
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise ComposeError("docker-compose.yml has no services")
    renderer = _Renderer(document=document, root=root)
    stack = renderer.stack()
    return stack, [renderer.secrets[name] for name in sorted(renderer.secrets)]


class _Dumper(yaml.SafeDumper):
    """No anchors: the stack file reads top to bottom."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def stack_text(*, root: Path) -> str:
    stack, _ = render_stack(compose_text=(root / "docker-compose.yml").read_text(), root=root)
    return _HEADER + "\n" + yaml.dump(stack, Dumper=_Dumper, sort_keys=False, width=120)


def write_secret_files(*, root: Path, variables: Mapping[str, str]) -> list[Path]:
    """Each secret the stack makes from .env, in a file of its own (mode 600) under
    SECRETS_DIR; the files written."""
    _, secrets = render_stack(compose_text=(root / "docker-compose.yml").read_text(), root=root)
    folder = root / SECRETS_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for secret in secrets:
        path = folder / secret.name
        value = interpolate(secret.template, variables)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(value)
        written.append(path)
    return written
