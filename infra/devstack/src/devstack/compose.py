"""docker-compose.yml, read as the one source of truth for the native stack.

For every service that compose builds from this repository, ``native_services``
gives the same command, ports and environment, with addresses mapped to this
machine: a URL that names an infrastructure service (postgres, redis, rabbitmq)
points at the server ``infra`` found, a URL that names one of our services points
at 127.0.0.1 and that service's port (a URL that names an alias several instances
share, like ``tasks.user-service``, becomes the list of those instances' URLs),
``*_PORT`` values follow the port map, and
``/run/secrets/NAME`` becomes the file compose would mount there.
"""

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import yaml

from devstack.errors import ComposeError

INFRA_SERVICES = frozenset({"postgres", "redis", "rabbitmq"})
LOOPBACK = "127.0.0.1"
_VARIABLE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\})")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s,;]+")
_SECRET_PATH = re.compile(r"^/run/secrets/([A-Za-z0-9_.-]+)$")


class PublishedPorts(Protocol):
    """Where a running deployment publishes each service's container ports."""

    def port(self, service: str, container_port: int) -> int: ...

    def url(self, service: str, container_port: int) -> str: ...


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file; comments and blank lines skipped, quotes removed."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ComposeError(f"{path}: not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name, operator, argument = match.group(2), match.group(3), match.group(4) or ""
        value = variables.get(name)
        unset_or_empty = value is None or (value == "" and operator is not None and operator.startswith(":"))
        if operator in (":-", "-") and unset_or_empty:
            return argument
        if operator in (":?", "?") and unset_or_empty:
            raise ComposeError(f"{name} is required: {argument}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def load_compose(*, compose_file: Path, env_file: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose document with variables filled in (the shell's environment wins over .env)."""
    variables = {**read_env_file(env_file), **(os.environ if environ is None else environ)}
    document = yaml.safe_load(compose_file.read_text())
    if not isinstance(document, dict) or "services" not in document:
        raise ComposeError(f"{compose_file} has no services")
    return dict(_interpolate_tree(document, variables))


@dataclass(frozen=True, slots=True)
class PortMapping:
    """``published`` on the host serves ``target`` inside the container."""

    published: int
    target: int


@dataclass(frozen=True, slots=True)
class NativeService:
    name: str
    command: list[str]
    environment: dict[str, str]
    ports: list[PortMapping]
    depends_on: list[str]
    health_url: str | None
    compose_environment: dict[str, str] = field(repr=False)


def parse_ports(entries: list[Any]) -> list[PortMapping]:
    mappings = []
    for entry in entries:
        text = str(entry).split("/")[0]
        pieces = text.split(":")
        if len(pieces) < 2:
            raise ComposeError(f"publish ports as HOST:CONTAINER, not {entry!r}")
        mappings.append(PortMapping(published=int(pieces[-2]), target=int(pieces[-1])))
    return mappings


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(str(item).split("=", 1) for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def _depends_on(service: Mapping[str, Any]) -> list[str]:
    raw = service.get("depends_on", [])
    return list(raw) if isinstance(raw, (list, dict)) else []


def _health_url(service: Mapping[str, Any]) -> str | None:
    test = service.get("healthcheck", {}).get("test")
    if isinstance(test, list):
        urls = [item for item in test if isinstance(item, str) and item.startswith("http")]
        return urls[-1] if urls else None
    return None


@dataclass(frozen=True, slots=True)
class AddressMap:
    """Where each compose address lives on this machine."""

    infra_urls: Mapping[str, str]  # compose infra service → URL of the real server
    ports: Mapping[tuple[str, int], int]  # (our service, container port) → local port
    secret_files: Mapping[str, Path]
    database_name: Callable[[str], str] = lambda name: name
    # A network alias several instances share (tasks.user-service) → those instances.
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Instances that do not run: lists of addresses leave them out.
    left_out: frozenset[str] = frozenset()

    def rewrite_url(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname
        if host is not None and host in self.aliases and parts.port is not None:
            # One name that DNS resolves to every instance → the list of every instance.
            return ",".join(
                self.rewrite_url(urlunsplit((parts.scheme, f"{name}:{parts.port}", parts.path, parts.query, "")))
                for name in self.aliases[host]
                if name not in self.left_out
            )
        if host is not None and host in self.infra_urls:
            server = urlsplit(self.infra_urls[host])
            path = parts.path
            if parts.scheme.startswith("postgresql") and path.strip("/"):
                path = "/" + self.database_name(path.strip("/"))
            return urlunsplit((parts.scheme, server.netloc, path, parts.query, parts.fragment))
        if host is not None and parts.port is not None and (host, parts.port) in self.ports:
            netloc = f"{LOOPBACK}:{self.ports[(host, parts.port)]}"
            return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return url

    def rewrite_value(self, *, service: str, key: str, value: str) -> str:
        secret = _SECRET_PATH.fullmatch(value)
        if secret:
            if secret.group(1) not in self.secret_files:
                raise ComposeError(f"{service}: {key} names an undeclared secret {secret.group(1)}")
            return str(self.secret_files[secret.group(1)])
        if key.endswith("_PORT") and value.isdigit() and (service, int(value)) in self.ports:
            return str(self.ports[(service, int(value))])
        urls = _URL.findall(value)
        if any(urlsplit(url).hostname in self.left_out for url in urls):
            # A list of instances' addresses, some of which do not run.
            return ",".join(self.rewrite_url(url) for url in urls if urlsplit(url).hostname not in self.left_out)
        return _URL.sub(lambda match: self.rewrite_url(match.group(0)), value)


def application_services(document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The services compose builds from this repository (the rest is infrastructure)."""
    return {name: spec for name, spec in document["services"].items() if "build" in spec}


def network_aliases(document: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Each network alias of our services → the services that carry it, in file order."""
    carriers: dict[str, list[str]] = {}
    for name, spec in application_services(document).items():
        networks = spec.get("networks", {})
        for network in networks.values() if isinstance(networks, dict) else ():
            for alias in (network or {}).get("aliases", []):
                carriers.setdefault(str(alias), []).append(name)
    return {alias: tuple(names) for alias, names in carriers.items()}


def secret_files(*, document: Mapping[str, Any], root: Path) -> dict[str, Path]:
    return {
        name: (root / spec["file"]).resolve()
        for name, spec in document.get("secrets", {}).items()
        if isinstance(spec, dict) and "file" in spec
    }


def native_services(*, document: Mapping[str, Any], addresses: AddressMap) -> list[NativeService]:
    services = []
    for name, spec in application_services(document).items():
        if name in addresses.left_out:
            continue
        command = spec.get("command")
        if not isinstance(command, list) or not command:
            raise ComposeError(f"{name}: give command as a list, so it runs the same without a shell")
        compose_env = _environment(spec)
        environment = {
            key: addresses.rewrite_value(service=name, key=key, value=value) for key, value in compose_env.items()
        }
        environment["HOST"] = LOOPBACK
        health = _health_url(spec)
        services.append(
            NativeService(
                name=name,
                command=[str(part) for part in command],
                environment=environment,
                ports=[
                    PortMapping(published=addresses.ports[(name, port.target)], target=port.target)
                    for port in parse_ports(spec.get("ports", []))
                ],
                depends_on=[
                    dep
                    for dep in _depends_on(spec)
                    if dep in application_services(document) and dep not in addresses.left_out
                ],
                health_url=None if health is None else _localize(health, name=name, addresses=addresses),
                compose_environment=compose_env,
            )
        )
    return services


def _localize(url: str, *, name: str, addresses: AddressMap) -> str:
    """A health URL as seen inside the container (localhost:PORT) → this machine."""
    parts = urlsplit(url)
    port = parts.port
    if port is None or (name, port) not in addresses.ports:
        raise ComposeError(f"{name}: the healthcheck URL must name one of the service's ports: {url}")
    return urlunsplit((parts.scheme, f"{LOOPBACK}:{addresses.ports[(name, port)]}", parts.path, "", ""))


def default_ports(document: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    """Each service's container ports → the ports compose publishes them on."""
    return {
        (name, port.target): port.published
        for name, spec in application_services(document).items()
        for port in parse_ports(spec.get("ports", []))
    }
