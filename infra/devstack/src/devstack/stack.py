"""The native stack as one object: compose file + infrastructure + overrides → processes.

``make up`` uses the compose ports; the end-to-end suite and the benchmark pass
free ports, their own database names and their own Redis key prefix, so they
never collide with a running ``make up`` or with each other.
"""

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from devstack.compose import (
    AddressMap,
    NativeService,
    default_ports,
    load_compose,
    native_services,
    network_aliases,
    secret_files,
)
from devstack.infra import Infra, create_databases, drop_databases
from devstack.mailsink import MailSink
from devstack.otlp import OtlpReceiver
from devstack.runner import NativeStack, Progress

MAIL_SERVICE = "mailpit"  # compose's mail catcher; natively a MailSink
TRACES_SERVICE = "otel-collector"  # compose's OpenTelemetry Collector; natively an OtlpReceiver


@dataclass(frozen=True)
class StackOptions:
    root: Path
    env_file: Path
    ports: Mapping[tuple[str, int], int] | None = None
    database_name: Callable[[str], str] = lambda name: name
    env_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    log_dir: Path | None = None
    # Variables that fill ${...} in the compose file before env_file does: None means
    # this process's environment (compose's rule); tests pass {} to depend on nothing.
    environ: Mapping[str, str] | None = None
    # Start only these services (and what they depend on); None starts them all.
    only: frozenset[str] | None = None
    # Instances not to start at all (user-service-2): every list of addresses loses
    # them, so the others run as the single instance of their service.
    leave_out: frozenset[str] = frozenset()
    # The local SMTP sink that stands in for compose's mailpit (see devstack.mailsink).
    mail_port: int = 1025
    mail_dir: Path | None = None  # None: <root>/.run/mail
    # The local OTLP receiver that stands in for compose's collector (devstack.otlp).
    otlp_port: int = 4318
    spans_file: Path | None = None  # None: <root>/.run/traces.jsonl (python -m devstack trace)


def plan(*, options: StackOptions, infra: Infra) -> list[NativeService]:
    document = load_compose(
        compose_file=options.root / "docker-compose.yml", env_file=options.env_file, environ=options.environ
    )
    addresses = AddressMap(
        infra_urls={
            **{name: infra.url_of(name) for name in ("postgres", "redis", "rabbitmq")},
            MAIL_SERVICE: f"smtp://127.0.0.1:{options.mail_port}",
            TRACES_SERVICE: f"http://127.0.0.1:{options.otlp_port}",
        },
        ports=dict(options.ports) if options.ports is not None else default_ports(document),
        secret_files=secret_files(document=document, root=options.root),
        database_name=options.database_name,
        aliases=network_aliases(document),
        left_out=options.leave_out,
    )
    services = native_services(document=document, addresses=addresses)
    if options.only is not None:
        services = _with_dependencies(services, options.only)
    for service in services:
        _use_consul_if_any(service, consul_http_addr=infra.consul_http_addr)
        service.environment.update(options.env_overrides.get(service.name, {}))
    return services


def _use_consul_if_any(service: NativeService, *, consul_http_addr: str) -> None:
    """Under compose, docker-compose.consul.yml registers every instance with Consul
    and points the gateway's discovery at it. Natively the same when CONSUL_HTTP_ADDR
    names an agent; else no registration and static discovery (the *_SERVICE_URL lists
    of docker-compose.yml)."""
    if not consul_http_addr:
        return
    environment = service.environment
    environment["CONSUL_HTTP_ADDR"] = consul_http_addr
    environment["SERVICE_ADDRESS"] = "127.0.0.1"
    if "DISCOVERY" in environment:
        environment["DISCOVERY"] = "consul"


def _with_dependencies(services: list[NativeService], wanted: frozenset[str]) -> list[NativeService]:
    by_name = {service.name: service for service in services}
    needed: set[str] = set()
    pending = list(wanted)
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(by_name[name].depends_on)
    return [service for service in services if service.name in needed]


def database_names(services: list[NativeService]) -> set[str]:
    """Every PostgreSQL database a service's environment names."""
    names = set()
    for service in services:
        for value in service.environment.values():
            if value.startswith("postgresql"):
                name = urlsplit(value).path.strip("/")
                if name:
                    names.add(name)
    return names


@dataclass
class Stack:
    """A native stack with its databases: ``start`` creates them, ``stop(drop=True)`` drops them."""

    options: StackOptions
    infra: Infra
    services: list[NativeService]
    native: NativeStack
    mail: MailSink | None = None
    traces: OtlpReceiver | None = None

    @classmethod
    def prepare(cls, *, options: StackOptions, infra: Infra) -> "Stack":
        services = plan(options=options, infra=infra)
        native = NativeStack(services=services, bin_dir=options.root / ".venv" / "bin", log_dir=options.log_dir)
        sends_mail = any(value.startswith("smtp://") for s in services for value in s.environment.values())
        mail = (
            MailSink(maildir=options.mail_dir or options.root / ".run" / "mail", port=options.mail_port)
            if sends_mail
            else None
        )
        receiver = f"http://127.0.0.1:{options.otlp_port}"
        sends_spans = any(s.environment.get("OTEL_EXPORTER_OTLP_ENDPOINT") == receiver for s in services)
        spans_file = options.spans_file or options.root / ".run" / "traces.jsonl"
        traces = OtlpReceiver(port=options.otlp_port, spans_file=spans_file) if sends_spans else None
        return cls(options=options, infra=infra, services=services, native=native, mail=mail, traces=traces)

    def start(self, *, health_timeout: float = 60.0, progress: Progress | None = None) -> None:
        """Databases, the mail and trace stand-ins, then the services (see NativeStack.start)."""
        asyncio.run(create_databases(server_url=self.infra.postgres_url, names=database_names(self.services)))
        if self.mail is not None:
            self.mail.start()
        if self.traces is not None:
            self.traces.start()
        self.native.start(health_timeout=health_timeout, progress=progress)

    def stop(self, *, drop_databases_too: bool = False) -> None:
        self.native.stop()
        if self.mail is not None:
            self.mail.stop()
        if self.traces is not None:
            self.traces.stop()
        if drop_databases_too:
            asyncio.run(drop_databases(server_url=self.infra.postgres_url, names=database_names(self.services)))

    def environment(self, service: str) -> Mapping[str, str]:
        """The variables a service runs with (after every rewrite and override)."""
        for candidate in self.services:
            if candidate.name == service:
                return candidate.environment
        raise KeyError(f"no service {service}")

    def port(self, service: str, container_port: int) -> int:
        for candidate in self.services:
            if candidate.name == service:
                for mapping in candidate.ports:
                    if mapping.target == container_port:
                        return mapping.published
        raise KeyError(f"{service} publishes no port {container_port}")

    def url(self, service: str, container_port: int) -> str:
        return f"http://127.0.0.1:{self.port(service, container_port)}"
