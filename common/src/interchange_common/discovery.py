"""Where a service's instances are, and which of them are healthy.

Discovery             what callers ask: ``healthy(service=...)``, the instances to use now
 ├── StaticDiscovery  instances listed in the settings (comma-separated URLs): what
 │                    native runs use when no Consul agent is configured
 ├── ConsulDiscovery  Consul's health API, passing instances only, kept fresh by one
 │                    blocking query per service; while Consul is unreachable the
 │                    last healthy set it gave is kept
 ├── DnsSrvDiscovery  SRV records from Consul's DNS interface
 │                    (``<service>.service.consul``), cached for their TTL
 └── DnsAddressDiscovery  every address the listed URLs' host names resolve to
                      (Swarm's ``tasks.<service>``, a Kubernetes headless Service),
                      resolved again each ``refresh_seconds``; the last non-empty
                      answer is kept while lookups fail or find nothing
ConsulRegistration    this instance in Consul's catalogue: registered at start-up
                      with an HTTP health check, deregistered first at shutdown

Choosing among the healthy instances (weights, ejecting one that keeps failing) is
interchange_common.balancing's job.
"""

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from interchange_common.errors import InterchangeCommonError
from interchange_common.tasks import run_forever

_log = logging.getLogger("interchange.discovery")


class DiscoveryUnavailable(InterchangeCommonError):
    """No instance of the service is known: discovery never answered, or listed none."""


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    host: str
    port: int
    weight: int = 1
    scheme: str = "http"

    @property
    def url(self) -> str:
        host = self.host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"


class Discovery(Protocol):
    async def healthy(self, *, service: str) -> Sequence[Instance]:
        """The instances of ``service`` that pass their health checks; never empty
        (DiscoveryUnavailable instead)."""
        ...

    async def close(self) -> None: ...


def parse_urls(value: str) -> list[str]:
    """A comma-separated list of base URLs (one URL is a list of one)."""
    return [url.strip().rstrip("/") for url in value.split(",") if url.strip()]


def instance_from_url(url: str) -> Instance:
    parts = urlsplit(url.strip())
    if not parts.hostname or parts.scheme not in ("http", "https", "grpc"):
        raise ValueError(f"not an instance URL: {url!r}")
    port = parts.port or {"http": 80, "https": 443, "grpc": 50051}[parts.scheme]
    return Instance(id=f"{parts.hostname}:{port}", host=parts.hostname, port=port, scheme=parts.scheme)


class StaticDiscovery:
    """Every listed instance counts as healthy: failures are for the balancer to see."""

    def __init__(self, *, urls: Mapping[str, Sequence[str]]) -> None:
        self._instances = {service: [instance_from_url(url) for url in listed] for service, listed in urls.items()}
        for service, instances in self._instances.items():
            if not instances:
                raise ValueError(f"no instance listed for {service}")

    async def healthy(self, *, service: str) -> Sequence[Instance]:
        try:
            return self._instances[service]
        except KeyError as e:
            raise DiscoveryUnavailable(f"no instances configured for {service}") from e

    async def close(self) -> None:
        return None


class ConsulHealth(Protocol):
    """The part of py-consul's ``Consul.health`` used here (a fake in unit tests)."""

    def service(self, service: str, **kwargs: Any) -> Awaitable[tuple[str, list[dict[str, Any]]]]: ...


@dataclass
class _Watch:
    instances: list[Instance] = field(default_factory=list)
    known: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class ConsulDiscovery:
    def __init__(
        self,
        *,
        health: ConsulHealth,
        scheme: str = "http",
        wait: str = "30s",
        first_answer_seconds: float = 5.0,
        close: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._health = health
        self._scheme = scheme
        self._wait = wait
        self._first_answer = first_answer_seconds
        self._close = close
        self._watches: dict[str, _Watch] = {}

    async def healthy(self, *, service: str) -> Sequence[Instance]:
        watch = self._watches.get(service)
        if watch is None:
            watch = self._watches[service] = _Watch()
            watch.task = asyncio.create_task(self._follow(service, watch), name=f"consul-watch-{service}")
        if not watch.known.is_set():
            try:
                async with asyncio.timeout(self._first_answer):
                    await watch.known.wait()
            except TimeoutError as e:
                raise DiscoveryUnavailable(f"Consul has not answered for {service}") from e
        if not watch.instances:
            raise DiscoveryUnavailable(f"Consul lists no passing instance of {service}")
        return watch.instances

    async def _follow(self, service: str, watch: _Watch) -> None:
        async def session(connected: Callable[[], None]) -> None:
            index: str | None = None
            while True:
                # A blocking query: Consul answers when the set changes or ``wait`` ends.
                new_index, nodes = await self._health.service(service, passing=True, index=index, wait=self._wait)
                connected()
                watch.instances = [self._instance(node) for node in nodes]
                watch.known.set()
                # An index that goes backwards (a restored snapshot) starts over.
                index = new_index if index is None or int(new_index) >= int(index) else None

        # On an error the last known set stays in use; run_forever logs and backs off.
        await run_forever(name=f"consul watch of {service}", session=session)

    def _instance(self, node: dict[str, Any]) -> Instance:
        service = node["Service"]
        return Instance(
            id=str(service["ID"]),
            host=str(service.get("Address") or node["Node"]["Address"]),
            port=int(service["Port"]),
            weight=int((service.get("Weights") or {}).get("Passing", 1)) or 1,
            scheme=self._scheme,
        )

    async def close(self) -> None:
        for watch in self._watches.values():
            if watch.task is not None:
                watch.task.cancel()
        for watch in self._watches.values():
            if watch.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task
        if self._close is not None:
            await self._close()


class SrvResolver(Protocol):
    """dnspython's ``dns.asyncresolver.Resolver.resolve`` (a fake in unit tests)."""

    def resolve(self, qname: str, rdtype: str) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class _Cached:
    instances: list[Instance]
    expires: float


class DnsSrvDiscovery:
    """SRV lookups as in the seed, the Python way: ``<service>.service.consul`` gives
    targets with ports and weights; addresses come from the answer's additional
    section (Consul sends them) or an A lookup. Answers are cached for their TTL (at
    least ``min_ttl``); when a lookup fails, the stale answer is used rather than none."""

    def __init__(
        self,
        *,
        resolver: SrvResolver,
        domain: str = "service.consul",
        scheme: str = "http",
        min_ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._domain = domain
        self._scheme = scheme
        self._min_ttl = min_ttl
        self._clock = clock
        self._cache: dict[str, _Cached] = {}

    async def healthy(self, *, service: str) -> Sequence[Instance]:
        cached = self._cache.get(service)
        if cached is not None and cached.expires > self._clock() and cached.instances:
            return cached.instances
        try:
            instances, ttl = await self._lookup(service)
        except Exception as e:
            if cached is not None and cached.instances:
                _log.warning("SRV lookup failed; using the last answer", extra={"service": service, "error": str(e)})
                return cached.instances
            raise DiscoveryUnavailable(f"SRV lookup for {service} failed: {e}") from e
        self._cache[service] = _Cached(instances, self._clock() + max(self._min_ttl, ttl))
        if not instances:
            raise DiscoveryUnavailable(f"no SRV records for {service}")
        return instances

    async def _lookup(self, service: str) -> tuple[list[Instance], float]:
        answer = await self._resolver.resolve(f"{service}.{self._domain}", "SRV")
        addresses: dict[str, str] = {}
        for rrset in getattr(answer.response, "additional", ()):
            for record in rrset:
                if hasattr(record, "address"):
                    addresses[str(rrset.name)] = str(record.address)
        instances = []
        for record in answer:
            target = str(record.target)
            host = addresses.get(target)
            if host is None:
                host = str(next(iter(await self._resolver.resolve(target, "A"))).address)
            instances.append(
                Instance(
                    id=f"{target}:{record.port}",
                    host=host,
                    port=int(record.port),
                    weight=max(1, int(record.weight)),
                    scheme=self._scheme,
                )
            )
        return instances, float(answer.rrset.ttl)

    async def close(self) -> None:
        return None


Resolve = Callable[[str], Awaitable[Sequence[str]]]
"""A host name to its addresses (IPv4 and IPv6), as strings."""


async def system_addresses(host: str) -> list[str]:
    """Every address the system's resolver gives for ``host`` (what getaddrinfo sees:
    /etc/hosts, then the container's DNS server)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass
class _Addresses:
    """One service: its listed URLs, what each last resolved to, and the lookup in flight."""

    listed: list[Instance]
    found: dict[int, list[Instance]] = field(default_factory=dict)  # by position in ``listed``
    instances: list[Instance] = field(default_factory=list)
    refresh_at: float = float("-inf")
    lookup: asyncio.Task[None] | None = None
    failing: bool = False
    error: str = ""


class DnsAddressDiscovery:
    """Each listed URL's host name names every instance: Swarm's ``tasks.<service>``
    resolves to the address of each running, healthy task, a Kubernetes headless
    Service to each ready pod. Every address becomes an instance with the URL's scheme
    and port, so a task that starts or stops during a rolling update comes or goes
    within ``refresh_seconds``.

    One lookup per service at a time: callers asking while it runs share it. Once an
    answer is known nobody waits for DNS: the first caller past ``refresh_seconds``
    starts the lookup in the background and everyone gets the last answer until it
    lands, so a slow DNS server delays no request. A URL whose lookup fails or finds
    nothing keeps its last non-empty answer (one warning per failure streak); only a
    service none of whose URLs ever resolved is DiscoveryUnavailable. A failed lookup
    also waits ``refresh_seconds`` before the next: DNS is not asked once a request."""

    def __init__(
        self,
        *,
        urls: Mapping[str, Sequence[str]],
        resolve: Resolve = system_addresses,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._services = {
            service: _Addresses([instance_from_url(url) for url in listed]) for service, listed in urls.items()
        }
        for service, state in self._services.items():
            if not state.listed:
                raise ValueError(f"no instance listed for {service}")
        self._resolve = resolve
        self._refresh_seconds = refresh_seconds
        self._clock = clock

    async def healthy(self, *, service: str) -> Sequence[Instance]:
        state = self._services.get(service)
        if state is None:
            raise DiscoveryUnavailable(f"no instances configured for {service}")
        if state.lookup is None and self._clock() >= state.refresh_at:
            state.lookup = asyncio.create_task(self._refresh(service, state), name=f"dns-addresses-{service}")
        if not state.instances and state.lookup is not None:
            # Nothing known yet: wait for the lookup, without cancelling it for the
            # others when this caller gives up.
            await asyncio.shield(state.lookup)
        if not state.instances:
            raise DiscoveryUnavailable(f"no address known for {service}: {state.error}")
        return state.instances

    async def _refresh(self, service: str, state: _Addresses) -> None:
        try:
            problems = []
            for position, url in enumerate(state.listed):
                try:
                    addresses = await self._addresses(url.host)
                except Exception as e:
                    problems.append(f"{url.host}: {e}")
                    continue
                if not addresses:
                    problems.append(f"{url.host}: no address")
                    continue
                state.found[position] = [
                    Instance(id=f"{address}:{url.port}", host=address, port=url.port, scheme=url.scheme)
                    for address in addresses
                ]
            merged = {i.id: i for position in sorted(state.found) for i in state.found[position]}
            state.instances = list(merged.values())
            self._report(service, state, problems)
        finally:
            state.refresh_at = self._clock() + self._refresh_seconds
            state.lookup = None

    async def _addresses(self, host: str) -> list[str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]  # a literal address is its own answer
        return list(dict.fromkeys(await self._resolve(host)))

    def _report(self, service: str, state: _Addresses, problems: list[str]) -> None:
        if problems:
            state.error = "; ".join(problems)
            if not state.failing:
                state.failing = True
                _log.warning(
                    "address lookup failed; keeping the last answer",
                    extra={"service": service, "error": state.error, "instances": len(state.instances)},
                )
        elif state.failing:
            state.failing = False
            state.error = ""
            _log.info("address lookup answers again", extra={"service": service, "instances": len(state.instances)})

    async def close(self) -> None:
        lookups = [state.lookup for state in self._services.values() if state.lookup is not None]
        for lookup in lookups:
            lookup.cancel()
        for lookup in lookups:
            with contextlib.suppress(asyncio.CancelledError):
                await lookup


class ConsulAgent(Protocol):
    """The part of py-consul's ``Consul.agent.service`` used here."""

    def register(self, name: str, **kwargs: Any) -> Awaitable[Any]: ...

    def deregister(self, service_id: str, **kwargs: Any) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class Registration:
    """What Consul is told about this instance."""

    service_id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...]
    check_url: str
    check_interval: str = "5s"
    check_timeout: str = "2s"
    deregister_after: str = "1m"


class ConsulRegistration:
    def __init__(self, *, agent: ConsulAgent, registration: Registration) -> None:
        self._agent = agent
        self.registration = registration

    async def register(self) -> None:
        r = self.registration
        await self._agent.register(
            r.name,
            service_id=r.service_id,
            address=r.address,
            port=r.port,
            tags=list(r.tags),
            check={
                "HTTP": r.check_url,
                "Interval": r.check_interval,
                "Timeout": r.check_timeout,
                "DeregisterCriticalServiceAfter": r.deregister_after,
            },
        )
        _log.info("registered with Consul", extra={"service_id": r.service_id, "service": r.name})

    async def deregister(self) -> None:
        await self._agent.deregister(self.registration.service_id)
        _log.info("deregistered from Consul", extra={"service_id": self.registration.service_id})
