"""Discovery backends and the balancer, on fakes of Consul's health API and of a DNS
resolver (the real agent is in tests/integration/test_consul.py)."""

import asyncio
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from interchange_common.balancing import Balancer
from interchange_common.discovery import (
    ConsulDiscovery,
    DiscoveryUnavailable,
    DnsAddressDiscovery,
    DnsSrvDiscovery,
    Instance,
    StaticDiscovery,
    instance_from_url,
)
from interchange_common.settings import CallerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def node(service_id: str, port: int, *, weight: int = 1) -> dict[str, Any]:
    return {
        "Node": {"Address": "10.0.0.9"},
        "Service": {"ID": service_id, "Address": "10.0.0.1", "Port": port, "Weights": {"Passing": weight}},
    }


class FakeHealth:
    """Answers blocking queries from a script; an exception in it is raised once."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[Any] = asyncio.Queue()
        self.queries: list[dict[str, Any]] = []

    async def service(self, service: str, **kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
        self.queries.append({"service": service, **kwargs})
        answer = await self.answers.get()
        if isinstance(answer, Exception):
            raise answer
        return answer


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_instance_urls():
    assert instance_from_url("http://orders:8002/") == Instance(id="orders:8002", host="orders", port=8002)
    assert Instance(id="x", host="::1", port=80).url == "http://[::1]:80"
    with pytest.raises(ValueError, match="not an instance URL"):
        instance_from_url("orders:8002")


async def test_static_discovery_lists_what_it_was_given():
    discovery = StaticDiscovery(urls={"orders": ["http://a:1", "http://b:2"]})
    assert [i.id for i in await discovery.healthy(service="orders")] == ["a:1", "b:2"]
    with pytest.raises(DiscoveryUnavailable):
        await discovery.healthy(service="users")


async def test_consul_passing_instances_follow_blocking_queries():
    health = FakeHealth()
    discovery = ConsulDiscovery(health=health, wait="30s")
    await health.answers.put(("10", [node("orders-1", 8002, weight=3)]))
    first = await discovery.healthy(service="orders")
    assert first == [Instance(id="orders-1", host="10.0.0.1", port=8002, weight=3)]
    await health.answers.put(("11", [node("orders-1", 8002), node("orders-2", 8003)]))
    await until(lambda: len(health.queries) == 3)
    assert [i.id for i in await discovery.healthy(service="orders")] == ["orders-1", "orders-2"]
    assert health.queries[0] == {"service": "orders", "passing": True, "index": None, "wait": "30s"}
    assert health.queries[1]["index"] == "10"
    assert health.queries[2]["index"] == "11"
    await discovery.close()


async def test_consul_unreachable_keeps_the_last_healthy_set():
    health = FakeHealth()
    discovery = ConsulDiscovery(health=health)
    await health.answers.put(("10", [node("orders-1", 8002)]))
    assert len(await discovery.healthy(service="orders")) == 1
    await health.answers.put(ConnectionRefusedError("consul is down"))
    await until(lambda: len(health.queries) >= 3)  # it asked again after the error
    assert [i.id for i in await discovery.healthy(service="orders")] == ["orders-1"]
    await discovery.close()


async def test_consul_that_never_answered_is_unavailable():
    discovery = ConsulDiscovery(health=FakeHealth(), first_answer_seconds=0.05)
    with pytest.raises(DiscoveryUnavailable, match="not answered"):
        await discovery.healthy(service="orders")
    await discovery.close()


class FakeResolver:
    def __init__(self) -> None:
        self.lookups = 0
        self.fail = False

    async def resolve(self, qname: str, rdtype: str) -> Any:
        self.lookups += 1
        if self.fail:
            raise OSError("no DNS")
        if rdtype == "A":
            return [SimpleNamespace(address="10.0.0.7")]
        records = [
            SimpleNamespace(target="node-a.node.dc1.consul.", port=8002, weight=5),
            SimpleNamespace(target="node-b.node.dc1.consul.", port=8003, weight=0),
        ]
        additional = [_RRset("node-a.node.dc1.consul.", [SimpleNamespace(address="10.0.0.5")])]
        return _Answer(records, ttl=10, additional=additional)


class _RRset(list):  # type: ignore[type-arg]
    def __init__(self, name: str, records: list[Any]) -> None:
        super().__init__(records)
        self.name = name


class _Answer(list):  # type: ignore[type-arg]
    def __init__(self, records: list[Any], *, ttl: int, additional: list[Any]) -> None:
        super().__init__(records)
        self.rrset = SimpleNamespace(ttl=ttl)
        self.response = SimpleNamespace(additional=additional)


async def test_srv_records_become_instances_cached_for_their_ttl():
    clock, resolver = Clock(), FakeResolver()
    discovery = DnsSrvDiscovery(resolver=resolver, clock=clock)
    instances = await discovery.healthy(service="orders")
    assert [(i.host, i.port, i.weight) for i in instances] == [("10.0.0.5", 8002, 5), ("10.0.0.7", 8003, 1)]
    lookups = resolver.lookups
    clock.now += 9
    await discovery.healthy(service="orders")
    assert resolver.lookups == lookups  # within the TTL: from the cache
    clock.now += 2
    resolver.fail = True
    assert await discovery.healthy(service="orders") == instances  # stale beats nothing
    with pytest.raises(DiscoveryUnavailable):
        await discovery.healthy(service="users")


class FakeAddresses:
    """A host name resolver answering from ``answers`` (an exception is raised); a
    cleared ``gate`` holds every lookup until it is set."""

    def __init__(self, answers: dict[str, list[str] | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        await self.gate.wait()
        answer = self.answers.get(host, [])
        if isinstance(answer, Exception):
            raise answer
        return list(answer)


def tasks_discovery(resolve: FakeAddresses, clock: Clock, *urls: str) -> DnsAddressDiscovery:
    return DnsAddressDiscovery(urls={"orders": list(urls)}, resolve=resolve, clock=clock)


async def ids(discovery: DnsAddressDiscovery) -> list[str]:
    return [i.id for i in await discovery.healthy(service="orders")]


async def eventually(discovery: DnsAddressDiscovery, expected: list[str]) -> None:
    """A refresh runs in the background: wait until its answer is the one handed out."""
    async with asyncio.timeout(5):
        while await ids(discovery) != expected:
            await asyncio.sleep(0.001)


async def test_every_address_of_a_name_is_an_instance():
    resolve = FakeAddresses({"tasks.orders": ["10.0.0.5", "10.0.0.6", "10.0.0.5", "fd00::7"]})
    discovery = tasks_discovery(resolve, Clock(), "https://tasks.orders:8002", "http://10.1.1.1:9000")
    instances = await discovery.healthy(service="orders")
    assert instances == [
        Instance(id="10.0.0.5:8002", host="10.0.0.5", port=8002, scheme="https"),
        Instance(id="10.0.0.6:8002", host="10.0.0.6", port=8002, scheme="https"),
        Instance(id="fd00::7:8002", host="fd00::7", port=8002, scheme="https"),
        Instance(id="10.1.1.1:9000", host="10.1.1.1", port=9000),
    ]
    assert instances[2].url == "https://[fd00::7]:8002"
    assert resolve.asked == ["tasks.orders"]  # a literal address is not looked up
    with pytest.raises(DiscoveryUnavailable):
        await discovery.healthy(service="users")


async def test_the_name_is_resolved_again_after_the_interval_and_a_removed_task_goes():
    clock, resolve = Clock(), FakeAddresses({"tasks.orders": ["10.0.0.5", "10.0.0.6"]})
    discovery = tasks_discovery(resolve, clock, "http://tasks.orders:8002")
    assert await ids(discovery) == ["10.0.0.5:8002", "10.0.0.6:8002"]
    resolve.answers["tasks.orders"] = ["10.0.0.6", "10.0.0.8"]  # a rolling update: 5 stops, 8 starts
    clock.now += 0.9
    assert await ids(discovery) == ["10.0.0.5:8002", "10.0.0.6:8002"]
    assert len(resolve.asked) == 1  # within the interval: from the cache
    clock.now += 0.1
    await eventually(discovery, ["10.0.0.6:8002", "10.0.0.8:8002"])
    assert len(resolve.asked) == 2


async def test_a_failed_or_empty_lookup_keeps_the_last_answer_and_warns_once(caplog):
    clock, resolve = Clock(), FakeAddresses({"tasks.orders": ["10.0.0.5"]})
    discovery = tasks_discovery(resolve, clock, "http://tasks.orders:8002")
    assert await ids(discovery) == ["10.0.0.5:8002"]
    answers: list[list[str] | Exception] = [OSError("Name or service not known"), []]
    for lookups, answer in enumerate(answers, start=2):
        resolve.answers["tasks.orders"] = answer
        clock.now += 1
        assert await ids(discovery) == ["10.0.0.5:8002"]  # starts a lookup in the background
        await asyncio.sleep(0.01)
        assert len(resolve.asked) == lookups
        assert await ids(discovery) == ["10.0.0.5:8002"]
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.name == "interchange.discovery"]
    assert len(warnings) == 1
    assert warnings[0].service == "orders"
    assert "Name or service not known" in warnings[0].error
    resolve.answers["tasks.orders"] = ["10.0.0.9"]
    clock.now += 1
    await eventually(discovery, ["10.0.0.9:8002"])


async def test_a_name_that_never_resolved_is_unavailable_until_it_does():
    clock, resolve = Clock(), FakeAddresses({"tasks.orders": OSError("Name or service not known")})
    discovery = tasks_discovery(resolve, clock, "http://tasks.orders:8002")
    with pytest.raises(DiscoveryUnavailable, match="Name or service not known"):
        await discovery.healthy(service="orders")
    with pytest.raises(DiscoveryUnavailable):
        await discovery.healthy(service="orders")
    assert len(resolve.asked) == 1  # a failure is cached too: DNS is not asked per request
    resolve.answers["tasks.orders"] = ["10.0.0.5"]
    clock.now += 1
    assert await ids(discovery) == ["10.0.0.5:8002"]


async def test_callers_share_one_lookup():
    clock, resolve = Clock(), FakeAddresses({"tasks.orders": ["10.0.0.5"]})
    discovery = tasks_discovery(resolve, clock, "http://tasks.orders:8002")
    resolve.gate.clear()
    callers = [asyncio.create_task(ids(discovery)) for _ in range(20)]
    await until(lambda: len(resolve.asked) == 1)
    callers[0].cancel()  # one caller giving up does not end the lookup for the others
    resolve.gate.set()
    answers = await asyncio.gather(*callers[1:])
    assert answers == [["10.0.0.5:8002"]] * 19
    assert callers[0].cancelled()
    # Once something is known, a refresh holds nobody up: the last answer meanwhile.
    resolve.gate.clear()
    resolve.answers["tasks.orders"] = ["10.0.0.6"]
    clock.now += 1
    assert await asyncio.gather(*(ids(discovery) for _ in range(20))) == [["10.0.0.5:8002"]] * 20
    await until(lambda: len(resolve.asked) == 2)
    await asyncio.sleep(0.01)
    assert len(resolve.asked) == 2
    resolve.gate.set()
    await eventually(discovery, ["10.0.0.6:8002"])
    await discovery.close()


def test_tasks_discovery_is_made_from_the_settings():
    settings = CallerSettings(environment="development", service_jwt_secret="dev-only-x", discovery="tasks")
    discovery = settings.make_discovery(static_urls={"orders": ["http://tasks.orders:8002"]})
    assert isinstance(discovery, DnsAddressDiscovery)


def balancer(clock: Clock, *urls: str, **options: Any) -> Balancer:
    return Balancer(service="orders", discovery=StaticDiscovery(urls={"orders": list(urls)}), clock=clock, **options)


async def test_weights_decide_how_often_an_instance_comes_first():
    heavy = Instance(id="heavy", host="a", port=1, weight=3)
    light = Instance(id="light", host="b", port=2, weight=1)

    class Fixed:
        async def healthy(self, *, service: str) -> list[Instance]:
            return [heavy, light]

        async def close(self) -> None:
            return None

    b = Balancer(service="orders", discovery=Fixed())
    firsts = Counter([(await b.candidates())[0].id for _ in range(4000)])
    assert 0.70 < firsts["heavy"] / 4000 < 0.80  # 3/4 expected


async def test_an_instance_that_keeps_failing_is_ejected_then_returns():
    clock = Clock()
    b = balancer(clock, "http://a:1", "http://b:2", failures_to_eject=2, eject_seconds=5)
    a = instance_from_url("http://a:1")
    b.failed(a)
    b.succeeded(a)  # not in a row
    b.failed(a)
    assert b.ejected() == set()
    b.failed(a)
    assert b.ejected() == {"a:1"}
    for _ in range(20):
        assert [i.id for i in await b.candidates()] == ["b:2", "a:1"]  # last resort only
    clock.now += 5
    assert b.ejected() == set()
    b.succeeded(a)
    b.failed(a)
    b.failed(a)
    assert b.ejected() == {"a:1"}


async def test_ejections_in_a_row_last_longer_and_a_refusal_ejects_at_once():
    clock = Clock()
    b = balancer(clock, "http://a:1", "http://b:2", eject_seconds=5, max_eject_seconds=12)
    a = instance_from_url("http://a:1")
    for seconds in (5, 10, 12):
        b.failed(a, refused=True)
        clock.now += seconds - 0.1
        assert b.ejected() == {"a:1"}
        clock.now += 0.1
        assert b.ejected() == set()


async def test_a_draining_instance_goes_after_the_others_and_before_the_ejected_until_its_hold_ends():
    clock = Clock()
    urls = ("http://a:1", "http://b:2", "http://c:3")
    b = balancer(clock, *urls, drain_hold_seconds=6, max_ejected_share=1, eject_seconds=60)
    a, c = instance_from_url("http://a:1"), instance_from_url("http://c:3")
    b.failed(c, refused=True)
    b.draining(a)
    for _ in range(20):
        assert [i.id for i in await b.candidates()] == ["b:2", "a:1", "c:3"]
    assert b.ejected() == {"c:3"}  # draining is no failure
    clock.now += 5.9
    b.draining(a)  # still answering "Connection: close": the hold starts again
    clock.now += 5.9
    assert [i.id for i in await b.candidates()][-2:] == ["a:1", "c:3"]
    clock.now += 0.1
    assert {i.id for i in (await b.candidates())[:2]} == {"a:1", "b:2"}


async def test_no_more_than_the_share_is_ejected():
    clock = Clock()
    b = balancer(clock, "http://a:1", "http://b:2", max_ejected_share=0.5)
    a, bb = instance_from_url("http://a:1"), instance_from_url("http://b:2")
    b.failed(a, refused=True)
    clock.now += 1
    b.failed(bb, refused=True)
    # Both are out, but only one may be: a is due back first, so a is in.
    assert [i.id for i in await b.candidates()] == ["a:1", "b:2"]


async def test_an_instance_discovery_drops_leaves_no_state_or_gauge_behind():
    listed = [instance_from_url("http://a:1"), instance_from_url("http://b:2")]

    class Changing:
        async def healthy(self, *, service: str) -> list[Instance]:
            return list(listed)

        async def close(self) -> None:
            return None

    def gauge(instance: str) -> float | None:
        return REGISTRY.get_sample_value("upstream_instance_ejected", {"service": "pruned", "instance": instance})

    b = Balancer(service="pruned", discovery=Changing())
    b.failed(listed[0], refused=True)
    assert gauge("a:1") == 1
    listed.pop(0)  # a:1 is gone (scaled down)
    assert [i.id for i in await b.candidates()] == ["b:2"]
    assert b.ejected() == set()
    assert gauge("a:1") is None
