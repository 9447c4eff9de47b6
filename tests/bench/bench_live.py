"""Live push in one run: WebSocket fan-out from one notification-service instance,
against a bare ``websockets`` broadcast server on the same machine, and how long an
order takes to reach its owner's event stream through the whole stack.

    fan-out    N clients in one room on one instance's /internal/ws (the gateway's
               pass-through left out), one of them sends M room messages in windows
               of W; a window ends when every client has the window's last message.
               Each message crosses Redis pub/sub and is written to N sockets.
    baseline   the same clients and windows against a bare websockets server (its own
               process, uvloop) that parses each message and broadcasts one encoded
               frame to every connection: the floor of "a Python WebSocket fan-out".
    latency    K users, each on GET /api/events through the gateway; orders placed
               open-loop at R per second for S seconds, round-robin over the users.
               Latency runs from each order's scheduled send time (so a stall counts
               against us) to its first notification on the owner's stream.

Prints deliveries/s for both and fan-out/baseline, the serving process's CPU time per
delivery for both (steadier than the rates when other work shares the machine), then
p50, p99 and max latency with the rate used. A benchmark, not a test: it asserts
nothing. It starts its own native stack (two notification instances) on free ports.

The clients offer permessage-deflate, as websockets and aiohttp do by default.
notification-service declines it (its sockets are the gateway's, on the internal
network), and so does the baseline by default: the same work on both sides.
``--baseline-compression deflate`` makes the baseline compress each frame for every
socket, as a server with websockets' defaults does.
"""

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import uvloop
from httpx_sse import aconnect_sse
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

from devstack.accounts import Account, register
from devstack.compose import read_env_file
from devstack.infra import ensure_infra
from devstack.liveclients import WELCOME
from devstack.shop import ITEMS, NOTIFICATION_INSTANCES, shop_on
from devstack.testing import accepts, free_port, wait_for
from interchange_common.actors import (
    ACTOR_EXPIRES_HEADER,
    ACTOR_ID_HEADER,
    ACTOR_ISSUED_AT_HEADER,
    ACTOR_ROLES_HEADER,
)
from interchange_common.servicejwt import ServiceTokenIssuer

ROOT = Path(__file__).resolve().parents[2]
ROOM = "bench"

Connect = Callable[[], Awaitable[ClientConnection]]


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201  # a benchmark reports on stdout


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# The baseline: a bare broadcast server, run as this script with --baseline-port.


async def baseline_server(*, port: int, compression: str) -> None:
    members: set[ServerConnection] = set()

    async def member(connection: ServerConnection) -> None:
        members.add(connection)
        try:
            async for raw in connection:
                said = orjson.loads(raw)
                frame = {"type": "room_message", "room": said["room"], "message": said["message"]}
                broadcast(members, orjson.dumps(frame | {"sentAt": time.time()}).decode())
        finally:
            members.discard(connection)

    async with serve(
        member, "127.0.0.1", port, max_size=4096, compression=None if compression == "none" else compression
    ):
        await asyncio.get_running_loop().create_future()


# The fan-out run, the same for both servers.


@dataclass
class Listener:
    """One room member counting the room messages it receives."""

    connection: ClientConnection
    received: int = 0
    heard: asyncio.Event = field(default_factory=asyncio.Event)
    waiting_for: str = ""

    async def listen(self) -> None:
        async for raw in self.connection:
            message = orjson.loads(raw)
            if message.get("type") != "room_message":
                continue
            self.received += 1
            if message["message"] == self.waiting_for:
                self.heard.set()


@dataclass(frozen=True)
class FanOut:
    deliveries: int
    expected: int
    seconds: float
    server_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.server_cpu_seconds / self.deliveries * 1e6


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fan_out(
    *, connect_one: Connect, server_pid: int, joins: bool, clients: int, messages: int, window: int
) -> FanOut:
    connections = [await connect_one() for _ in range(clients)]
    try:
        if joins:
            for connection in connections:
                await connection.send(orjson.dumps({"type": "join_room", "room": ROOM}).decode())
                while (joined := orjson.loads(await connection.recv()))["type"] != "user_joined":
                    pass
                assert joined["room"] == ROOM, joined
        listeners = [Listener(connection) for connection in connections]
        tasks = [asyncio.create_task(listener.listen()) for listener in listeners]
        sender = connections[0]
        started, cpu_started = time.perf_counter(), cpu_seconds(server_pid)
        for first in range(0, messages, window):
            last = f"m{min(first + window, messages) - 1}"
            for listener in listeners:
                listener.heard.clear()
                listener.waiting_for = last
            for number in range(first, min(first + window, messages)):
                said = {"type": "room_message", "room": ROOM, "message": f"m{number}"}
                await sender.send(orjson.dumps(said).decode())
            async with asyncio.timeout(60):
                await asyncio.gather(*(listener.heard.wait() for listener in listeners))
        seconds, cpu = time.perf_counter() - started, cpu_seconds(server_pid) - cpu_started
        for task in tasks:
            task.cancel()
        return FanOut(sum(listener.received for listener in listeners), clients * messages, seconds, cpu)
    finally:
        await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)


def instance_connector(*, url: str, secret: str) -> Connect:
    issuer = ServiceTokenIssuer(service="gateway", secret=secret, ttl_seconds=3600)

    async def connect_one() -> ClientConnection:
        headers = {
            "Authorization": issuer.authorization_for(audience="notification-service"),
            ACTOR_ID_HEADER: str(uuid.uuid4()),
            ACTOR_ROLES_HEADER: "user",
            ACTOR_EXPIRES_HEADER: str(int(time.time()) + 3600),
            ACTOR_ISSUED_AT_HEADER: str(int(time.time())),
        }
        connection = await connect(url, additional_headers=headers, max_size=2**20)
        welcome = orjson.loads(await connection.recv())
        assert welcome["type"] == "welcome", welcome
        return connection

    return connect_one


def baseline_connector(*, url: str) -> Connect:
    async def connect_one() -> ClientConnection:
        return await connect(url, max_size=2**20)

    return connect_one


# Order placed → notification received.


@dataclass
class Arrivals:
    at: dict[str, float] = field(default_factory=dict)
    ready: int = 0


async def follow(*, gateway: httpx.AsyncClient, account: Account, arrivals: Arrivals, opened: asyncio.Event) -> None:
    timeout = httpx.Timeout(10.0, read=None)
    async with aconnect_sse(gateway, "GET", "/api/events", headers=account.headers, timeout=timeout) as source:
        source.response.raise_for_status()
        arrivals.ready += 1
        opened.set()
        async for event in source.aiter_sse():
            if event.event != "notification":
                continue
            payload = event.json()
            order_id = payload.get("data", {}).get("order_id")
            if payload["type"] != WELCOME and order_id is not None:
                arrivals.at.setdefault(order_id, time.perf_counter())


async def latency(*, gateway_url: str, accounts: list[Account], rate: float, seconds: float) -> list[float]:
    arrivals = Arrivals()
    sent: dict[str, float] = {}
    failures: list[str] = []
    limits = httpx.Limits(max_connections=len(accounts) + 64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30, limits=limits) as gateway:
        opened = asyncio.Event()
        followers = [
            asyncio.create_task(follow(gateway=gateway, account=account, arrivals=arrivals, opened=opened))
            for account in accounts
        ]
        while arrivals.ready < len(accounts):
            opened.clear()
            async with asyncio.timeout(30):
                await opened.wait()

        async def place(account: Account, scheduled: float) -> None:
            response = await gateway.post(
                "/api/orders",
                json={"items": ITEMS},
                headers={**account.headers, "Idempotency-Key": str(uuid.uuid4())},
            )
            if response.status_code != 201:
                failures.append(f"{response.status_code} {response.text[:120]}")
                return
            sent[response.json()["id"]] = scheduled

        total = int(rate * seconds)
        start = time.perf_counter()
        placing = []
        for number in range(total):
            scheduled = start + number / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            placing.append(asyncio.create_task(place(accounts[number % len(accounts)], scheduled)))
        await asyncio.gather(*placing)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while not sent.keys() <= arrivals.at.keys():
                    await asyncio.sleep(0.05)
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    if failures:
        say(f"  {len(failures)} orders failed, e.g. {failures[0]}")
    missing = len(sent.keys() - arrivals.at.keys())
    if missing:
        say(f"  {missing} notifications did not arrive within 30 s (left out of the numbers)")
    return [(arrivals.at[order] - scheduled) * 1000 for order, scheduled in sent.items() if order in arrivals.at]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100, help="room members (fan-out)")
    parser.add_argument("--messages", type=int, default=2000, help="room messages sent (fan-out)")
    parser.add_argument("--window", type=int, default=20, help="messages in flight (fan-out)")
    parser.add_argument("--users", type=int, default=10, help="users with an event stream (latency)")
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second (latency)")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of orders (latency)")
    parser.add_argument("--no-latency", action="store_true", help="the fan-out and its baseline only")
    parser.add_argument(
        "--baseline-compression", choices=("deflate", "none"), default="none", help="the baseline's (fan-out)"
    )
    parser.add_argument("--baseline-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_port is not None:
        uvloop.run(baseline_server(port=args.baseline_port, compression=args.baseline_compression))
        return

    secret = read_env_file(ROOT / ".env.example")["SERVICE_JWT_SECRET"]
    workdir = Path(tempfile.mkdtemp(prefix="interchange-bench-live-"))
    port = free_port()
    baseline = subprocess.Popen(
        [sys.executable, __file__, "--baseline-port", str(port), "--baseline-compression", args.baseline_compression]
    )
    try:
        with shop_on(
            root=ROOT,
            infra=ensure_infra(),
            log_dir=workdir / "logs",
            purpose="bench",
            env_overrides={"gateway": {"AUTH_RATE_LIMIT_REQUESTS": "100000"}},
        ) as shop:
            instance = shop.stack.url(NOTIFICATION_INSTANCES[0], 8003).replace("http://", "ws://") + "/internal/ws"
            baseline_url = f"ws://127.0.0.1:{port}"
            wait_for(
                lambda: baseline.poll() is None and accepts("127.0.0.1", port), timeout=10, what="the baseline server"
            )
            say(
                f"fan-out: {args.clients} clients in one room, {args.messages} messages, {args.window} in flight"
                f" (baseline compression: {args.baseline_compression})"
            )
            shape = {"clients": args.clients, "messages": args.messages, "window": args.window}
            instance_pid = next(
                running.process.pid
                for running in shop.stack.native.running
                if running.service.name == NOTIFICATION_INSTANCES[0]
            )
            ours = uvloop.run(
                fan_out(
                    connect_one=instance_connector(url=instance, secret=secret),
                    server_pid=instance_pid,
                    joins=True,
                    **shape,
                )
            )
            bare = uvloop.run(
                fan_out(connect_one=baseline_connector(url=baseline_url), server_pid=baseline.pid, joins=False, **shape)
            )
            took: list[float] = []
            if not args.no_latency:
                accounts = [register(shop.gateway, name=f"Bench {n}") for n in range(args.users)]
                say(f"latency: {args.rate:g} orders/s for {args.seconds:g} s over {args.users} users' event streams")
                took = uvloop.run(
                    latency(
                        gateway_url=str(shop.gateway.base_url), accounts=accounts, rate=args.rate, seconds=args.seconds
                    )
                )
    finally:
        baseline.terminate()
        baseline.wait(timeout=10)
    say(f"{'server':<14}{'deliveries/s':>14}{'delivered':>18}{'seconds':>10}{'CPU us/delivery':>17}")
    for name, result in (("notification", ours), ("baseline", bare)):
        delivered = f"{result.deliveries}/{result.expected}"
        say(
            f"{name:<14}{result.per_second:>14.0f}{delivered:>18}{result.seconds:>10.2f}"
            f"{result.cpu_us_per_delivery:>17.1f}"
        )
    say(
        f"fan-out/baseline = {ours.per_second / bare.per_second:.2f}x"
        f" (CPU per delivery: {bare.cpu_us_per_delivery / ours.cpu_us_per_delivery:.2f}x)"
    )
    if took:
        say(
            f"order placed → notification received at {args.rate:g}/s ({len(took)} orders): "
            f"p50 {statistics.median(took):.1f} ms, p99 {percentile(took, 0.99):.1f} ms, max {max(took):.1f} ms"
        )


if __name__ == "__main__":
    main()
