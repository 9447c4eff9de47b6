"""Whole orders through the whole stack, offered open-loop, with the CPU each order costs
in every process.

    stack      the topology of `make up` (the gateway and two instances of every backend
               service), native, on free
               ports, with the machine's PostgreSQL, RabbitMQ and Redis and the runner's
               SMTP sink; rate limits raised so that only the stack's capacity refuses.
               Traced as docker-compose.yml says (ratio 0.1), to the run's own OTLP
               receiver, a thread of this process (the runner's row).
    load       a separate process (uvloop, aiohttp): USERS users, each with its event
               stream (GET /api/events) open through the gateway; orders placed at a
               fixed rate, round-robin over the users, whatever the answers do (open
               loop). Latency runs from each order's scheduled send, so a stall counts
               against the stack. Each placed order's notification must reach its
               owner's stream.
    steps      each rate runs WARMUP seconds, then SECONDS measured. A step is
               "sustained" when its POST p99 is at most 250 ms, no request failed and
               every notification arrived; stepping stops at the first step that is not.
    latency    order → notification p50/p99 at 20/s and at the sustained rate.
    shedding   at twice the sustained rate: how fast refusals (429/503) come back, the
               accepted orders' p99, and whether every accepted order was notified.
    CPU        utime+stime of every process over each measured window, divided by the
               orders placed in it: each service instance (its process group),
               PostgreSQL, RabbitMQ, Redis, the SMTP sink (a thread of this process), the
               runner (the rest of this process), and the machine as a whole less the
               load generator (the kernel's share included). The load generator is
               reported apart, with how busy it was.
    tracing    then three stacks side by side: tracing off (no endpoint, so nothing is
               installed), at the default ratio and at 100%. Their steps at 20/s take
               turns (ABC CBA ABC), so that whatever else the machine does weighs on
               each alike; then one step each at 40/s. Tracing's cost is the CPU per
               order it adds in the services and the receiver (their own processes'
               figures: other work on the machine does not enter them) over the whole
               stack's CPU per order with tracing off. Also: spans per order (every span
               the receivers got, the exporters' batch delay waited out, over the orders
               sent), and what "off" leaves on the path compared with no tracing code at
               all, which one run cannot hold both of: each check timed here, in a process
               without tracing, times how often an order passes it (log lines counted on
               the stack without tracing, the other call sites counted in the code).

    instances  then two stacks side by side, without and with the second instances of
               user-service and the event store (issue 19): their steps at 20/s take
               turns (AB BA ...) for the CPU per order of each, then both are stepped
               up to the rate they no longer sustain. The cost of the extra instances is
               the ratio of the orders/s the CPU carries (the stacks' CPU per order).

A benchmark, not a test: it asserts nothing. `make bench` runs it; --help for the knobs
(--parts steps, tracing or instances runs one part).
"""

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import uvloop

from devstack.accounts import register
from devstack.compose import application_services, load_compose
from devstack.infra import ensure_infra
from devstack.otlp import OtlpReceiver, SpanRecord
from devstack.shop import ITEMS, Shop, shop_on
from interchange_common import tracing

ROOT = Path(__file__).resolve().parents[2]
SUSTAINED_P99_MS = 250.0
TICKS = os.sysconf("SC_CLK_TCK")
# Fine steps where this machine's limit lies today, coarse ones up to the goal (250/s).
DEFAULT_STEPS = "25,40,50,60,70,80,100,150,200,250,300"
# Infrastructure processes, by the name the kernel gives them (/proc/<pid>/comm).
INFRA_PROCESSES = {
    "postgresql": ("postgres",),
    "rabbitmq": ("beam.smp", "epmd", "erl_child_setup", "inet_gethost"),
    "redis": ("redis-server",),
}
# Rate limits out of the way: only the stack's capacity refuses.
UNLIMITED = {"gateway": {"RATE_LIMIT_REQUESTS": "10000000", "AUTH_RATE_LIMIT_REQUESTS": "100000"}}


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201  # a benchmark reports on stdout


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# The load generator: its own process, driven over stdin/stdout with one JSON line each way.


@dataclass
class StepResult:
    rate: float
    placed: int = 0
    refused: int = 0
    failed: int = 0
    failure_example: str = ""
    post_ms: list[float] = field(default_factory=list)
    refusal_ms: list[float] = field(default_factory=list)
    # Who refused and why (the problem's detail): the gateway's shedding, or a
    # service behind it that was unavailable; each with its latencies.
    refusals_by_detail: dict[str, list[float]] = field(default_factory=dict)
    notification_ms: list[float] = field(default_factory=list)
    missing_notifications: int = 0
    seconds: float = 0.0

    @property
    def post_p99(self) -> float:
        return percentile(self.post_ms, 0.99)

    @property
    def sustained(self) -> bool:
        return (
            self.placed > 0
            and self.failed == 0
            and self.refused == 0
            and self.missing_notifications == 0
            and self.post_p99 <= SUSTAINED_P99_MS
        )


class LoadGenerator:
    def __init__(self, *, gateway_url: str, tokens: list[str]) -> None:
        self._gateway_url = gateway_url
        self._tokens = tokens
        self._arrivals: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._streams: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            base_url=self._gateway_url, connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=10)
        )
        opened = [asyncio.get_running_loop().create_future() for _ in self._tokens]
        self._streams = [
            asyncio.create_task(self._follow(token, ready)) for token, ready in zip(self._tokens, opened, strict=True)
        ]
        async with asyncio.timeout(60):
            await asyncio.gather(*opened)

    async def close(self) -> None:
        for task in self._streams:
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _follow(self, token: str, ready: asyncio.Future[None]) -> None:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        async with self._session.get("/api/events", headers=headers) as response:
            if response.status != 200:
                ready.set_exception(RuntimeError(f"event stream: {response.status} {await response.text()}"))
                return
            ready.set_result(None)
            event = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "notification":
                    order_id = json.loads(line[5:]).get("data", {}).get("order_id")
                    if order_id is not None:
                        self._arrivals.setdefault(order_id, time.perf_counter())
                elif not line:
                    event = ""

    async def _place(self, *, token: str, scheduled: float, result: StepResult, sent: dict[str, float]) -> None:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
        try:
            async with self._session.post(
                "/api/orders", json={"items": ITEMS}, headers=headers, timeout=aiohttp.ClientTimeout(total=60)
            ) as response:
                body = await response.read()
                took = (time.perf_counter() - scheduled) * 1000
                if response.status == 201:
                    result.placed += 1
                    result.post_ms.append(took)
                    sent[json.loads(body)["id"]] = scheduled
                elif response.status in (429, 503) and "Retry-After" in response.headers:
                    result.refused += 1
                    result.refusal_ms.append(took)
                    detail = str(json.loads(body).get("detail", "")) if body.startswith(b"{") else ""
                    result.refusals_by_detail.setdefault(detail, []).append(took)
                else:
                    result.failed += 1
                    result.failure_example = result.failure_example or f"{response.status} {body[:160]!r}"
        except (aiohttp.ClientError, TimeoutError) as e:
            result.failed += 1
            result.failure_example = result.failure_example or repr(e)

    async def step(self, *, rate: float, warmup: float, seconds: float, report: IO[str]) -> StepResult:
        result, ignored = StepResult(rate=rate), StepResult(rate=rate)
        sent: dict[str, float] = {}
        placing: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        warm_orders, total = int(rate * warmup), int(rate * (warmup + seconds))
        for number in range(total):
            scheduled = start + number / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            if number == warm_orders:
                _tell(report, {"event": "measuring"})
            measured = number >= warm_orders
            placing.append(
                asyncio.create_task(
                    self._place(
                        token=self._tokens[number % len(self._tokens)],
                        scheduled=scheduled,
                        result=result if measured else ignored,
                        sent=sent if measured else {},
                    )
                )
            )
        await asyncio.sleep(max(0.0, start + warmup + seconds - time.perf_counter()))
        _tell(report, {"event": "measured"})
        result.seconds = seconds
        await asyncio.gather(*placing)
        deadline = time.perf_counter() + 30
        while not sent.keys() <= self._arrivals.keys() and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        result.notification_ms = [
            (self._arrivals[order] - scheduled) * 1000 for order, scheduled in sent.items() if order in self._arrivals
        ]
        result.missing_notifications = len(sent.keys() - self._arrivals.keys())
        return result


def _tell(report: IO[str], message: dict[str, Any]) -> None:
    report.write(json.dumps(message) + "\n")
    report.flush()


async def load_main(*, gateway_url: str) -> None:
    """Read the users' tokens, then one step per line of stdin; answer on stdout."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tokens = json.loads(await reader.readline())
    generator = LoadGenerator(gateway_url=gateway_url, tokens=tokens)
    await generator.open()
    _tell(sys.stdout, {"event": "ready"})
    try:
        while line := await reader.readline():
            asked = json.loads(line)
            result = await generator.step(report=sys.stdout, **asked)
            _tell(sys.stdout, {"event": "result", "result": asdict(result)})
    finally:
        await generator.close()


# CPU accounting, from /proc.


def _ticks(stat_path: Path, *, reaped_children: bool = False) -> int:
    """utime + stime of one process or thread, in clock ticks (0 once it is gone), and
    with ``reaped_children`` those of its children that have exited: a PostgreSQL
    backend that ends within a window is then still counted, in the postmaster."""
    try:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    own = int(fields[11]) + int(fields[12])
    return own + int(fields[13]) + int(fields[14]) if reaped_children else own


def _processes() -> Iterator[tuple[int, str, int]]:
    """(pid, comm, process group) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            pgrp = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        yield int(entry.name), comm, pgrp


def _machine_ticks() -> int:
    """Busy ticks of every CPU: everything but idle and iowait (steal and guest left out)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return user + nice + system + irq + softirq


@dataclass(frozen=True)
class Sample:
    rows: dict[str, int]
    machine: int
    load: int


class CpuMeter:
    """Where the CPU goes: one row per service instance, infrastructure server, the SMTP
    sink thread and the runner, plus the machine and the load generator."""

    def __init__(self, *, services: dict[str, int], sink_threads: list[int], load_pid: int) -> None:
        self._services = services  # name → process group (the runner starts each in its own)
        self._sink_threads = sink_threads
        self._load_pid = load_pid

    def sample(self) -> Sample:
        rows = dict.fromkeys([*self._services, *INFRA_PROCESSES, "smtp sink", "runner"], 0)
        groups = {group: name for name, group in self._services.items()}
        for pid, comm, pgrp in _processes():
            if pgrp in groups:
                rows[groups[pgrp]] += _ticks(Path(f"/proc/{pid}/stat"), reaped_children=True)
                continue
            for name, comms in INFRA_PROCESSES.items():
                if comm in comms:
                    rows[name] += _ticks(Path(f"/proc/{pid}/stat"), reaped_children=True)
        sink = sum(_ticks(Path(f"/proc/self/task/{tid}/stat")) for tid in self._sink_threads)
        rows["smtp sink"] = sink
        rows["runner"] = _ticks(Path("/proc/self/stat")) - sink
        return Sample(rows=rows, machine=_machine_ticks(), load=_ticks(Path(f"/proc/{self._load_pid}/stat")))


@dataclass(frozen=True)
class Cost:
    """CPU milliseconds per order over one measured window."""

    rows: dict[str, float]
    machine_less_load: float
    load: float
    load_busy: float  # the load generator's share of one core

    @classmethod
    def between(cls, before: Sample, after: Sample, *, orders: int, seconds: float) -> "Cost":
        def ms(ticks: int) -> float:
            return ticks * 1000 / TICKS / max(orders, 1)

        load_ticks = after.load - before.load
        return cls(
            rows={name: ms(after.rows[name] - before.rows[name]) for name in after.rows},
            machine_less_load=ms(after.machine - before.machine - load_ticks),
            load=ms(load_ticks),
            load_busy=load_ticks / TICKS / seconds,
        )

    @classmethod
    def combined(cls, windows: list[tuple["Cost", int]]) -> "Cost":
        """Several windows (each with its orders) as one: per-order figures weighted by orders."""
        orders = sum(count for _, count in windows) or 1

        def mean(figure: Callable[[Cost], float]) -> float:
            return sum(figure(cost) * count for cost, count in windows) / orders

        return cls(
            rows={
                name: sum(cost.rows[name] * count for cost, count in windows) / orders for name in windows[0][0].rows
            },
            machine_less_load=mean(lambda cost: cost.machine_less_load),
            load=mean(lambda cost: cost.load),
            load_busy=mean(lambda cost: cost.load_busy),
        )


# The run.


@dataclass
class Driver:
    process: subprocess.Popen[str]
    meter: CpuMeter

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited ({self.process.poll()})")
        return dict(json.loads(line))

    def step(self, *, rate: float, warmup: float, seconds: float) -> tuple[StepResult, Cost]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"rate": rate, "warmup": warmup, "seconds": seconds}) + "\n")
        self.process.stdin.flush()
        assert self.read()["event"] == "measuring"
        before = self.meter.sample()
        assert self.read()["event"] == "measured"
        after = self.meter.sample()
        answer = self.read()
        result = StepResult(**answer["result"])
        return result, Cost.between(before, after, orders=result.placed + result.refused, seconds=seconds)


def describe(result: StepResult) -> str:
    notified = result.notification_ms
    text = (
        f"{result.rate:>6g}/s  placed {result.placed:>6}  POST p50 {percentile(result.post_ms, 0.5):>7.1f}"
        f" p99 {result.post_p99:>7.1f} ms  notification p50 {percentile(notified, 0.5):>7.1f}"
        f" p99 {percentile(notified, 0.99):>7.1f} ms"
    )
    if result.refused:
        text += f"  refused {result.refused} (p99 {percentile(result.refusal_ms, 0.99):.1f} ms)"
        for detail, took in sorted(result.refusals_by_detail.items(), key=lambda item: -len(item[1])):
            latency = f"p50 {percentile(took, 0.5):.1f} p99 {percentile(took, 0.99):.1f} ms"
            text += f"\n{'':>10}{len(took):>6} refused: {detail!r}, {latency}"
    if result.failed:
        text += f"  FAILED {result.failed}, e.g. {result.failure_example}"
    if result.missing_notifications:
        text += f"  {result.missing_notifications} notifications missing"
    return text


def cost_table(costs: dict[str, Cost]) -> None:
    """One column per window (a rate, a tracing mode), one row per process."""
    columns = list(costs.values())
    say(f"{'CPU ms per order':<26}" + "".join(f"{label:>10}" for label in costs))
    names = list(dict.fromkeys(name for cost in columns for name in cost.rows))  # every column's processes
    for name in names:
        say(
            f"{name:<26}"
            + "".join(f"{cost.rows[name]:>10.2f}" if name in cost.rows else f"{'-':>10}" for cost in columns)
        )
    say(f"{'sum of the rows':<26}" + "".join(f"{sum(cost.rows.values()):>10.2f}" for cost in columns))
    say(f"{'machine less load gen.':<26}" + "".join(f"{cost.machine_less_load:>10.2f}" for cost in columns))
    say(f"{'load generator':<26}" + "".join(f"{cost.load:>10.2f}" for cost in columns))
    say(f"{'load generator busy':<26}" + "".join(f"{cost.load_busy:>9.0%} " for cost in columns))


@contextlib.contextmanager
def loaded_stack(
    *,
    purpose: str,
    log_dir: Path,
    users: int,
    overrides: Mapping[str, Mapping[str, str]],
    leave_out: frozenset[str] = frozenset(),
) -> Iterator[tuple[Shop, Driver]]:
    """A started stack with ``users`` registered users and the load generator, each
    user's event stream open; ``leave_out``: instances it runs without."""
    with shop_on(
        root=ROOT,
        infra=ensure_infra(),
        log_dir=log_dir,
        purpose=purpose,
        env_overrides=overrides,
        leave_out=leave_out,
    ) as shop:
        # Registering hashes a password: four at once keep both cores busy.
        with ThreadPoolExecutor(max_workers=4) as pool:
            tokens = list(pool.map(lambda n: register(shop.gateway, name=f"Bench {n}").token, range(users)))
        services = {r.service.name: r.process.pid for r in shop.stack.native.running}
        assert shop.stack.mail is not None
        load = subprocess.Popen(
            [sys.executable, __file__, "--load", str(shop.gateway.base_url)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert load.stdin is not None
            load.stdin.write(json.dumps(tokens) + "\n")
            load.stdin.flush()
            driver = Driver(
                process=load,
                meter=CpuMeter(services=services, sink_threads=shop.stack.mail.thread_ids, load_pid=load.pid),
            )
            assert driver.read()["event"] == "ready"
            yield shop, driver
        finally:
            load.terminate()
            load.wait(timeout=30)


def run(args: argparse.Namespace) -> None:
    steps = [float(rate) for rate in args.steps.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="interchange-bench-orders-"))
    say(f"stack logs in {workdir / 'logs'}")
    with loaded_stack(purpose="bench", log_dir=workdir / "logs", users=args.users, overrides=UNLIMITED) as (_, driver):
        say(f"{args.users} users with an event stream; {args.warmup:g} s warm-up, {args.seconds:g} s measured")
        costs: dict[str, Cost] = {}
        at_20, _ = driver.step(rate=20, warmup=args.warmup, seconds=args.seconds)
        say(describe(at_20))
        sustained: StepResult | None = None
        for rate in steps:
            result, cost = driver.step(rate=rate, warmup=args.warmup, seconds=args.seconds)
            say(describe(result))
            costs[f"{rate:g}/s"] = cost
            if not result.sustained:
                break
            sustained = result
        cost_table(costs)
        shed: StepResult | None = None
        if sustained is not None:
            shed, _ = driver.step(rate=2 * sustained.rate, warmup=args.warmup, seconds=args.seconds)
            say(describe(shed))
    summarize(at_20=at_20, sustained=sustained, shed=shed)


def summarize(*, at_20: StepResult, sustained: StepResult | None, shed: StepResult | None) -> None:
    def notified(result: StepResult) -> str:
        times = result.notification_ms
        return f"p50 {percentile(times, 0.5):.1f} ms, p99 {percentile(times, 0.99):.1f} ms"

    say(f"order → notification at 20/s: {notified(at_20)}")
    if sustained is None:
        say(f"sustained: none of the steps (POST p99 ≤ {SUSTAINED_P99_MS:g} ms, every notification)")
        return
    say(f"sustained: {sustained.rate:g} orders/s (POST p99 {sustained.post_p99:.1f} ms); {notified(sustained)}")
    if shed is not None:
        accepted_p99 = percentile(shed.post_ms, 0.99)
        say(
            f"at 2x ({shed.rate:g}/s): {shed.refused} refused, refusals p99 {percentile(shed.refusal_ms, 0.99):.1f} ms;"
            f" {shed.placed} accepted, p99 {accepted_p99:.1f} ms; {shed.failed} failed;"
            f" {shed.missing_notifications} accepted orders not notified"
        )


# Tracing overhead (issue 18): the same orders with tracing off, at the default ratio
# and at 100%, on three stacks side by side whose steps take turns.

TRACING_MODES: dict[str, dict[str, str]] = {
    # No endpoint: configure_tracing installs nothing (no provider, no instrumentation).
    "off": {"OTEL_EXPORTER_OTLP_ENDPOINT": ""},
    # docker-compose.yml's settings: its endpoint (here the run's receiver), its ratio.
    "default": {"OTEL_TRACES_SAMPLER_ARG": str(tracing.DEFAULT_RATIO)},
    "full": {"OTEL_TRACES_SAMPLER_ARG": "1.0"},
}
GOAL_OFF, GOAL_DEFAULT = 0.02, 0.10
# A span leaves its service within the batch processor's delay (OTEL_BSP_SCHEDULE_DELAY,
# 5 s by default): once none has come for longer, the receiver holds them all.
EXPORT_QUIET_SECONDS = 6.5
OTHER_ROWS = (*INFRA_PROCESSES, "smtp sink", "runner")  # the rows that are not services


def _span_while_off() -> None:
    with tracing.span("notify order.placed") as span:
        span.set_attribute("interchange.outcome", "handled")


def _continued_span_while_off() -> None:
    with tracing.continued_span("send mail", parent=None, kind=tracing.SpanKind.CLIENT):
        pass


# What tracing leaves on an order's path while it is off, each with how many times an
# order passes it at most, counted from the call sites and rounded up: enabled() in the
# access log (one per HTTP request: gateway, order-service), current_traceparent() (the
# event store's append, the notification and mail rows, the live push), span() (the
# group commit, the projection, the consumer), links_to() (the group commit, the
# projection), continued_span() (the mail, the live push, its delivery on both
# instances). tracing.log_fields() runs once
# per log line, a count measured on the stack without tracing.
OFF_PATH: tuple[tuple[str, int, Callable[[], object]], ...] = (
    ("tracing.enabled()", 4, tracing.enabled),
    ("tracing.current_traceparent()", 6, tracing.current_traceparent),
    ("with tracing.span(...)", 3, _span_while_off),
    ("tracing.links_to([None])", 2, lambda: tracing.links_to([None])),
    ("with tracing.continued_span(...)", 6, _continued_span_while_off),
)


def microseconds_per_call(call: Callable[[], object]) -> float:
    timer = timeit.Timer(call)
    loops, _ = timer.autorange()
    return min(timer.repeat(repeat=5, number=loops)) / loops * 1e6


@dataclass(frozen=True)
class OffPath:
    """Microseconds per call of each check tracing leaves in place while off."""

    per_call: dict[str, float]
    log_fields: float

    @classmethod
    def measure(cls) -> "OffPath":
        if tracing.enabled():
            raise RuntimeError("tracing is on in the benchmark's own process: the off path cannot be timed")
        return cls(
            per_call={what: microseconds_per_call(call) for what, _, call in OFF_PATH},
            log_fields=microseconds_per_call(tracing.log_fields),
        )


@dataclass
class Arm:
    """One stack of a side-by-side comparison (a tracing mode, a topology): its load
    generator and what its steps measured."""

    mode: str
    shop: Shop
    driver: Driver
    log_dir: Path
    windows: list[tuple[Cost, int]] = field(default_factory=list)  # each measured window, its orders
    sent: int = 0  # orders sent in every step, warm-ups included
    log_lines: int = 0  # lines the services logged in every step

    @property
    def receiver(self) -> OtlpReceiver | None:
        return self.shop.stack.traces

    def step(self, *, rate: float, warmup: float, seconds: float) -> tuple[StepResult, Cost]:
        lines = _log_lines(self.log_dir)
        result, cost = self.driver.step(rate=rate, warmup=warmup, seconds=seconds)
        self.sent += int(rate * warmup) + result.placed + result.refused + result.failed
        self.log_lines += _log_lines(self.log_dir) - lines
        return result, cost


def _log_lines(log_dir: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in log_dir.glob("*.log"))


def check_mode(arm: Arm) -> None:
    """Stop unless the stack runs as its mode says: every service's endpoint and ratio,
    the receiver, and the gateway's answers carrying a traceparent only when on."""
    stack, on = arm.shop.stack, arm.mode != "off"
    if on != (stack.traces is not None):
        raise RuntimeError(f"{arm.mode}: the stack's OTLP receiver is {'missing' if on else 'running'}")
    endpoint = stack.traces.url if stack.traces is not None else ""
    ratio = TRACING_MODES[arm.mode].get("OTEL_TRACES_SAMPLER_ARG")
    for service in stack.services:
        environment = service.environment
        if environment.get("OTEL_EXPORTER_OTLP_ENDPOINT", "") != endpoint or (
            on and environment.get("OTEL_TRACES_SAMPLER_ARG") != ratio
        ):
            raise RuntimeError(f"{arm.mode}: {service.name} runs with {dict(environment)}")
    answer = arm.shop.gateway.get("/api/users/me", headers=arm.shop.admin.headers)
    if (tracing.TRACEPARENT in answer.headers) != on:
        raise RuntimeError(f"{arm.mode}: the gateway answered with headers {dict(answer.headers)}")


def exported(receivers: list[OtlpReceiver]) -> list[int]:
    """How many spans each receiver holds once no more came for EXPORT_QUIET_SECONDS
    (at most a minute)."""
    counts, since = [len(r.spans()) for r in receivers], time.monotonic()
    deadline = since + 60
    while time.monotonic() - since < EXPORT_QUIET_SECONDS and time.monotonic() < deadline:
        time.sleep(0.25)
        now = [len(r.spans()) for r in receivers]
        if now != counts:
            counts, since = now, time.monotonic()
    return counts


def run_tracing(args: argparse.Namespace) -> None:
    rate, rounds, began = args.tracing_rate, args.tracing_rounds, time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="interchange-bench-tracing-"))
    say(f"\nTracing overhead: stack logs in {workdir}")
    off_path = OffPath.measure()  # before the stacks start: a quiet machine
    document = load_compose(compose_file=ROOT / "docker-compose.yml", env_file=ROOT / ".env.example", environ={})
    names = list(application_services(document))
    with contextlib.ExitStack() as started:
        arms: list[Arm] = []
        for mode, variables in TRACING_MODES.items():
            overrides = {name: {**UNLIMITED.get(name, {}), **variables} for name in names}
            shop, driver = started.enter_context(
                loaded_stack(purpose=f"bench_{mode}", log_dir=workdir / mode, users=args.users, overrides=overrides)
            )
            arm = Arm(mode=mode, shop=shop, driver=driver, log_dir=workdir / mode)
            check_mode(arm)
            arms.append(arm)
        traced = [arm for arm in arms if arm.receiver is not None]
        receivers = [arm.receiver for arm in traced if arm.receiver is not None]
        idle_from, idle_start = _machine_ticks(), time.monotonic()
        before = exported(receivers)
        idle = (_machine_ticks() - idle_from) / TICKS / (time.monotonic() - idle_start)
        say(
            f"three stacks ({', '.join(TRACING_MODES)}), {args.users} users each; the machine with all three idle:"
            f" {idle:.0%} of a core. {rounds} rounds at {rate:g}/s, each stack in turn"
            f" ({args.tracing_warmup:g} s warm-up, {args.tracing_seconds:g} s measured)"
        )
        for number in range(rounds):
            for arm in arms if number % 2 == 0 else arms[::-1]:  # ABC CBA: a drift weighs on each alike
                result, cost = arm.step(rate=rate, warmup=args.tracing_warmup, seconds=args.tracing_seconds)
                arm.windows.append((cost, result.placed + result.refused))
                say(f"{arm.mode:<8}{describe(result)}")
        capacity: dict[str, StepResult] = {}
        if args.capacity_rate:
            for arm in arms:
                capacity[arm.mode], _ = arm.step(
                    rate=args.capacity_rate, warmup=args.tracing_warmup, seconds=args.capacity_seconds
                )
                say(f"{arm.mode:<8}{describe(capacity[arm.mode])}")
        after = exported(receivers)
        spans = {
            arm.mode: receiver.spans()[start:end]
            for arm, receiver, start, end in zip(traced, receivers, before, after, strict=True)
        }
    report_tracing(arms=arms, capacity=capacity, spans=spans, off_path=off_path, rate=rate)
    say(f"(tracing overhead measured in {time.monotonic() - began:.0f} s)")


def report_tracing(
    *,
    arms: list[Arm],
    capacity: dict[str, StepResult],
    spans: dict[str, list[SpanRecord]],
    off_path: OffPath,
    rate: float,
) -> None:
    """The CPU per order of each mode, and tracing's cost as the CPU it adds where it
    runs, the services and the receiver (their processes' own figures, which nothing
    else on the machine can touch), over the whole stack's CPU per order without it:
    on a machine the CPU limits, throughput falls by that share."""
    costs = {arm.mode: Cost.combined(arm.windows) for arm in arms}
    say(f"CPU per order at {rate:g}/s, the rounds together (runner: this process, the OTLP receiver):")
    cost_table(costs)
    base = costs["off"]
    stack_off = sum(base.rows.values())

    def services(cost: Cost) -> float:
        return sum(ms for name, ms in cost.rows.items() if name not in OTHER_ROWS)

    def added(mode: str) -> float:
        cost = costs[mode]
        return services(cost) + cost.rows["runner"] - services(base) - base.rows["runner"]

    def row(label: str, figure: Callable[[str], float], spec: str) -> None:
        say(f"{label:<26}" + "".join(f"{figure(mode):{spec}}" for mode in costs))

    say(f"{'against off':<26}" + "".join(f"{mode:>10}" for mode in costs))
    row("services, CPU/order", lambda mode: services(costs[mode]) / services(base), ">10.3f")
    row("+ ms/order (svc.+recv.)", added, ">+10.2f")
    row("cost (of the stack's)", lambda mode: added(mode) / stack_off, ">+10.1%")
    row("orders/s the CPU carries", lambda mode: stack_off / (stack_off + added(mode)), ">10.3f")
    foreign = base.machine_less_load / stack_off - 1
    if foreign > 0.15:
        say(f"(the machine was {foreign:.0%} busier than the stack: other work ran; the rows above leave it out)")
    for number in range(len(arms[0].windows)):
        each = "  ".join(f"{arm.mode} {services(arm.windows[number][0]):.2f}" for arm in arms)
        say(f"round {number + 1}, services' CPU ms per order: {each}")
    for mode, result in capacity.items():
        verdict = "sustained" if result.sustained else "NOT sustained"
        say(f"at {result.rate:g}/s with tracing {mode}: POST p99 {result.post_p99:.1f} ms, {verdict}")

    sent = {arm.mode: arm.sent for arm in arms}
    per_order = {mode: len(received) / max(sent[mode], 1) for mode, received in spans.items()}
    if "full" in spans:
        say(f"spans per order at 100%: {per_order['full']:.1f} ({len(spans['full'])} spans, {sent['full']} orders)")
        if "default" in per_order:
            share = per_order["default"] / per_order["full"]
            say(f"spans per order at the default ratio: {per_order['default']:.2f} ({share:.1%} of 100%)")
        by_service = Counter(span.service for span in spans["full"])
        say("  by service: " + ", ".join(f"{name} {n / sent['full']:.1f}" for name, n in by_service.most_common()))
        by_name = Counter((span.service, span.kind, span.name) for span in spans["full"])
        for (service, kind, name), count in by_name.most_common():
            if count / sent["full"] >= 0.05:
                say(f"  {count / sent['full']:>5.2f}  {service}: {name} [{kind}]")

    off = next(arm for arm in arms if arm.mode == "off")
    lines = off.log_lines / max(off.sent, 1)
    say("While off, what tracing leaves on the path (timed in this process, tracing not configured):")
    say(f"  {'call':<36}{'per order':>10}{'µs/call':>10}{'µs/order':>10}")
    total = lines * off_path.log_fields
    say(f"  {'tracing.log_fields() (per log line)':<36}{lines:>10.1f}{off_path.log_fields:>10.3f}{total:>10.2f}")
    for what, count, _ in OFF_PATH:
        total += count * off_path.per_call[what]
        say(f"  {what:<36}{count:>10}{off_path.per_call[what]:>10.3f}{count * off_path.per_call[what]:>10.2f}")
    off_share = total / 1000 / stack_off
    say(
        f"  {total:.1f} µs per order: {off_share:.3%} of the stack's {stack_off:.1f} ms,"
        f" {total / 1000 / services(base):.3%} of the services' {services(base):.1f} ms"
    )

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    say(f"goal, tracing off costs ≤ {GOAL_OFF:.0%}: {off_share:.2%} (the off path above): {met(off_share <= GOAL_OFF)}")
    if "default" in costs:
        cost = added("default") / stack_off
        say(f"goal, the default ratio costs ≤ {GOAL_DEFAULT:.0%}: {cost:+.1%}: {met(cost <= GOAL_DEFAULT)}")
    if "full" in costs:
        say(f"100% (no goal): {added('full') / stack_off:+.1%}")


# The instances added for rolling restarts (issue 19): the stack before them ran one
# of each of these.
SECOND_INSTANCES = frozenset({"user-service-2", "event-store-2"})
TOPOLOGIES = {"one each": SECOND_INSTANCES, "two each": frozenset()}
GOAL_INSTANCES = 0.05


def run_instances(args: argparse.Namespace) -> None:
    """What the second user-service and event-store instances cost: two stacks side by
    side, without and with them, taking turns at one rate (ABBA rounds) for the CPU per
    order, then each stepped up to the rate it no longer sustains."""
    rate, rounds, began = args.instances_rate, args.instances_rounds, time.monotonic()
    steps = [float(step) for step in args.instances_steps.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="interchange-bench-instances-"))
    say(f"\nSecond instances of user-service and the event store: stack logs in {workdir}")
    with contextlib.ExitStack() as started:
        arms = []
        for mode, leave_out in TOPOLOGIES.items():
            slug = mode.replace(" ", "_")
            shop, driver = started.enter_context(
                loaded_stack(
                    purpose=f"bench_{slug}",
                    log_dir=workdir / slug,
                    users=args.users,
                    overrides=UNLIMITED,
                    leave_out=leave_out,
                )
            )
            arms.append(Arm(mode=mode, shop=shop, driver=driver, log_dir=workdir / slug))
        say(
            f"{rounds} rounds at {rate:g}/s, each stack in turn ({args.tracing_warmup:g} s warm-up,"
            f" {args.tracing_seconds:g} s measured), then each stepped over {args.instances_steps}/s"
        )
        for number in range(rounds):
            for arm in arms if number % 2 == 0 else arms[::-1]:
                result, cost = arm.step(rate=rate, warmup=args.tracing_warmup, seconds=args.tracing_seconds)
                arm.windows.append((cost, result.placed + result.refused))
                say(f"{arm.mode:<10}{describe(result)}")
        sustained: dict[str, float] = {}
        going = list(arms)
        for step in steps:  # each rate on both stacks in turn, until a stack no longer sustains it
            for arm in list(going):
                result, _ = arm.step(rate=step, warmup=args.tracing_warmup, seconds=args.tracing_seconds)
                say(f"{arm.mode:<10}{describe(result)}")
                if result.sustained:
                    sustained[arm.mode] = step
                else:
                    going.remove(arm)
    costs = {arm.mode: Cost.combined(arm.windows) for arm in arms}
    say(f"CPU per order at {rate:g}/s, the rounds together:")
    cost_table(costs)
    stacks = {mode: sum(cost.rows.values()) for mode, cost in costs.items()}
    carried = stacks["one each"] / stacks["two each"]
    say(f"the stack's CPU per order: one each {stacks['one each']:.2f} ms, two each {stacks['two each']:.2f} ms")
    say(f"orders/s the CPU carries, two each against one each: {carried:.3f}")
    for mode in costs:
        say(f"highest rate sustained, {mode}: {sustained.get(mode, 0):g}/s")
    verdict = "met" if carried >= 1 - GOAL_INSTANCES else "NOT met"
    say(f"goal, the extra instances cost ≤ {GOAL_INSTANCES:.0%} of the rate: {carried - 1:+.1%}: {verdict}")
    say(f"(instances measured in {time.monotonic() - began:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=64, help="users, each with an event stream")
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="offered rates, orders/s, comma-separated")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of each step before measuring")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured per step")
    parser.add_argument("--parts", choices=["all", "steps", "tracing", "instances"], default="all", help="which runs")
    parser.add_argument("--tracing-rate", type=float, default=20.0, help="tracing: orders/s of the CPU rounds")
    parser.add_argument("--tracing-rounds", type=int, default=3, help="tracing: rounds over the three stacks")
    parser.add_argument("--tracing-warmup", type=float, default=5.0, help="tracing: seconds before measuring")
    parser.add_argument("--tracing-seconds", type=float, default=15.0, help="tracing: seconds measured per step")
    parser.add_argument("--capacity-rate", type=float, default=40.0, help="tracing: one step more (0: none)")
    parser.add_argument("--capacity-seconds", type=float, default=10.0, help="tracing: its seconds measured")
    parser.add_argument("--instances-rate", type=float, default=20.0, help="instances: orders/s of the CPU rounds")
    parser.add_argument("--instances-rounds", type=int, default=4, help="instances: rounds over the two stacks")
    parser.add_argument("--instances-steps", default="30,40,50,60,70", help="instances: rates stepped, orders/s")
    parser.add_argument("--load", metavar="GATEWAY_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        uvloop.run(load_main(gateway_url=args.load))
        return
    with contextlib.suppress(KeyboardInterrupt):
        if args.parts in ("all", "steps"):
            run(args)
        if args.parts in ("all", "tracing"):
            run_tracing(args)
        if args.parts in ("all", "instances"):
            run_instances(args)


if __name__ == "__main__":
    main()
