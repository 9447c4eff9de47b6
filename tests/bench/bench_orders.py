"""Whole orders through the whole stack, offered open-loop, with the CPU each order costs
in every process.

    stack      the topology of `make up` (gateway, user-service, event-store, two
               order-service and two notification-service instances), native, on free
               ports, with the machine's PostgreSQL, RabbitMQ and Redis and the runner's
               SMTP sink; rate limits raised so that only the stack's capacity refuses.
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

A benchmark, not a test: it asserts nothing. `make bench` runs it; --help for the knobs.
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
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import uvloop

from devstack.accounts import register
from devstack.infra import ensure_infra
from devstack.shop import ITEMS, shop_on

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


def cost_table(costs: dict[float, Cost]) -> None:
    rates = sorted(costs)
    say(f"{'CPU ms per order':<26}" + "".join(f"{f'{rate:g}/s':>10}" for rate in rates))
    names = list(costs[rates[0]].rows)
    for name in names:
        say(f"{name:<26}" + "".join(f"{costs[rate].rows[name]:>10.2f}" for rate in rates))
    say(f"{'sum of the rows':<26}" + "".join(f"{sum(costs[rate].rows.values()):>10.2f}" for rate in rates))
    say(f"{'machine less load gen.':<26}" + "".join(f"{costs[rate].machine_less_load:>10.2f}" for rate in rates))
    say(f"{'load generator':<26}" + "".join(f"{costs[rate].load:>10.2f}" for rate in rates))
    say(f"{'load generator busy':<26}" + "".join(f"{costs[rate].load_busy:>9.0%} " for rate in rates))


def run(args: argparse.Namespace) -> None:
    steps = [float(rate) for rate in args.steps.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="interchange-bench-orders-"))
    say(f"stack logs in {workdir / 'logs'}")
    overrides = {"gateway": {"RATE_LIMIT_REQUESTS": "10000000", "AUTH_RATE_LIMIT_REQUESTS": "100000"}}
    with shop_on(
        root=ROOT, infra=ensure_infra(), log_dir=workdir / "logs", purpose="bench", env_overrides=overrides
    ) as shop:
        tokens = [register(shop.gateway, name=f"Bench {n}").token for n in range(args.users)]
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
            say(f"{args.users} users with an event stream; {args.warmup:g} s warm-up, {args.seconds:g} s measured")
            costs: dict[float, Cost] = {}
            at_20, _ = driver.step(rate=20, warmup=args.warmup, seconds=args.seconds)
            say(describe(at_20))
            sustained: StepResult | None = None
            for rate in steps:
                result, cost = driver.step(rate=rate, warmup=args.warmup, seconds=args.seconds)
                say(describe(result))
                costs[rate] = cost
                if not result.sustained:
                    break
                sustained = result
            cost_table(costs)
            shed: StepResult | None = None
            if sustained is not None:
                shed, _ = driver.step(rate=2 * sustained.rate, warmup=args.warmup, seconds=args.seconds)
                say(describe(shed))
        finally:
            load.terminate()
            load.wait(timeout=30)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=64, help="users, each with an event stream")
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="offered rates, orders/s, comma-separated")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of each step before measuring")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured per step")
    parser.add_argument("--load", metavar="GATEWAY_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        uvloop.run(load_main(gateway_url=args.load))
        return
    with contextlib.suppress(KeyboardInterrupt):
        run(args)


if __name__ == "__main__":
    main()
