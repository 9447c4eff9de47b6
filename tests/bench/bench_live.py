"""Live push, measured in one run on a native stack of its own.

    fan-out   CLIENTS WebSockets in one room on one notification-service instance (its
              /internal/ws, signed with a service token as the gateway signs); one of
              them sends MESSAGES room messages, and deliveries/s is CLIENTS x MESSAGES
              over the time until every client has every message. Baseline: the same
              room on a bare ``websockets`` broadcast server in a process of its own
              (no Redis, no checks); the script prints fan-out/bare.
    latency   one user's /api/events stream through the gateway while orders are
              placed at a steady RATE per second: order placed (POST answered) →
              notification received, p50 and p99. Baseline: the POST's own p50.

A benchmark, not a test: it asserts nothing.
"""

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
from httpx_sse import aconnect_sse
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

from devstack.compose import read_env_file
from devstack.infra import ensure_infra
from devstack.testing import free_port, isolated_stack, run_id
from interchange_common.actors import ACTOR_EXPIRES_HEADER, ACTOR_ID_HEADER, ACTOR_ROLES_HEADER
from interchange_common.servicejwt import ServiceTokenIssuer

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
ROOM = "bench"


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201  # a benchmark reports on stdout


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# The baseline: a room that is only a set of sockets.


def _bare_server(port: int) -> None:
    members: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        members.add(connection)
        try:
            async for message in connection:
                if orjson.loads(message)["type"] == "room_message":
                    broadcast(members, message)
                else:
                    await connection.send(message)
        finally:
            members.discard(connection)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, max_queue=None):
            await asyncio.Future()

    asyncio.run(main())


# Fan-out


async def _drain(connection: ClientConnection, *, expected: int) -> None:
    seen = 0
    while seen < expected:
        if orjson.loads(await connection.recv())["type"] == "room_message":
            seen += 1


async def fan_out(*, url: str, headers_for: list[dict[str, str]], messages: int, joins: bool) -> float:
    """Deliveries per second of ``messages`` room messages to every connected client."""
    connections = [await connect(url, additional_headers=headers, max_queue=None) for headers in headers_for]
    try:
        for connection in connections:
            await connection.send(orjson.dumps({"type": "join_room", "room": ROOM}).decode())
            if joins:  # the service confirms a join with user_joined; wait until all are in
                while orjson.loads(await connection.recv()).get("type") != "user_joined":
                    pass
            await connection.send(b'{"type":"ping"}'.decode())
            while orjson.loads(await connection.recv()).get("type") != "pong":
                pass
        drains = [asyncio.create_task(_drain(c, expected=messages)) for c in connections]
        started = time.perf_counter()
        for index in range(messages):
            payload = {"type": "room_message", "room": ROOM, "message": f"message {index}"}
            await connections[0].send(orjson.dumps(payload).decode())
        await asyncio.gather(*drains)
        return len(connections) * messages / (time.perf_counter() - started)
    finally:
        for connection in connections:
            await connection.close()


# Latency


async def latency(*, gateway_url: str, token: str, rate: float, seconds: float) -> tuple[list[float], list[float]]:
    """(placed → received, POST round trip) in ms, for orders placed at ``rate`` per second."""
    headers = {"Authorization": f"Bearer {token}"}
    placed_at: dict[str, float] = {}
    received: dict[str, float] = {}
    posts: list[float] = []
    total = int(rate * seconds)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        done, listening = asyncio.Event(), asyncio.Event()

        async def listen() -> None:
            async with aconnect_sse(client, "GET", "/api/events", headers=headers, timeout=None) as source:
                source.response.raise_for_status()
                listening.set()
                async for event in source.aiter_sse():
                    if event.event != "notification":
                        continue
                    order_id = event.json()["data"].get("order_id")
                    if order_id is not None:
                        received[order_id] = time.perf_counter()
                        if len(received) == total:
                            done.set()
                            return

        async def place() -> None:
            sent = time.perf_counter()
            answer = await client.post(
                "/api/orders",
                json={"items": [{"sku": "BENCH-1", "quantity": 1, "unit_price": "1.00"}]},
                headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
            )
            answer.raise_for_status()
            placed_at[answer.json()["id"]] = now = time.perf_counter()
            posts.append((now - sent) * 1000)

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(listening.wait(), timeout=30)
        start = time.perf_counter()
        placing = []
        for index in range(total):
            # Open loop: each order leaves on schedule, whatever the earlier ones do.
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
            placing.append(asyncio.create_task(place()))
        await asyncio.gather(*placing)
        await asyncio.wait_for(done.wait(), timeout=60)
        listener.cancel()
    return [(received[key] - placed_at[key]) * 1000 for key in placed_at], posts


async def run(*, clients: int, messages: int, rate: float, seconds: float) -> None:
    example = read_env_file(ENV_EXAMPLE)
    run = run_id()
    workdir = Path(tempfile.mkdtemp(prefix="interchange-bench-live-"))
    bare_port = free_port()
    bare = multiprocessing.get_context("spawn").Process(target=_bare_server, args=(bare_port,), daemon=True)
    bare.start()
    with isolated_stack(
        root=ROOT,
        infra=ensure_infra(),
        run=run,
        purpose="benchlive",
        log_dir=workdir / "logs",
        env_overrides={"gateway": {"RATE_LIMIT_REQUESTS": "100000000"}},
    ) as stack:
        issuer = ServiceTokenIssuer(service="gateway", secret=example["SERVICE_JWT_SECRET"], ttl_seconds=3600)
        expires = str(int(time.time()) + 3600)
        members = [
            {
                "Authorization": issuer.authorization_for(audience="notification-service"),
                ACTOR_ID_HEADER: str(uuid.uuid4()),
                ACTOR_ROLES_HEADER: "user",
                ACTOR_EXPIRES_HEADER: expires,
            }
            for _ in range(clients)
        ]
        instance = f"ws://127.0.0.1:{stack.port('notification-service', 8003)}/internal/ws"
        for attempt in range(30):  # the bare server is a process of its own: wait for it to listen
            try:
                async with connect(f"ws://127.0.0.1:{bare_port}"):
                    break
            except OSError:
                await asyncio.sleep(0.1 * attempt)
        bare_url = f"ws://127.0.0.1:{bare_port}"
        bare_rate = await fan_out(url=bare_url, headers_for=members, messages=messages, joins=False)
        ours = await fan_out(url=instance, headers_for=members, messages=messages, joins=True)

        async with httpx.AsyncClient(base_url=stack.url("gateway", 8080)) as client:
            email, password = f"bench-{uuid.uuid4().hex[:8]}@example.com", "benchmark password"
            registered = await client.post(
                "/api/auth/register", json={"name": "Bench", "email": email, "password": password}
            )
            registered.raise_for_status()
            login = await client.post("/api/auth/token", json={"email": email, "password": password})
            login.raise_for_status()
        delays, posts = await latency(
            gateway_url=stack.url("gateway", 8080), token=login.json()["access_token"], rate=rate, seconds=seconds
        )
    bare.terminate()
    say(f"fan-out: {clients} WebSockets in one room, {messages} room messages from one of them")
    say(f"  notification-service  {ours:>10.0f} deliveries/s")
    say(f"  bare websockets       {bare_rate:>10.0f} deliveries/s")
    say(f"  fan-out/bare = {ours / bare_rate:.2f}x")
    say(f"latency: {len(delays)} orders at {rate:g}/s, placed (POST answered) → notification on /api/events")
    say(f"  p50 {percentile(delays, 0.5):.1f} ms  p99 {percentile(delays, 0.99):.1f} ms")
    say(f"  the POST itself: p50 {statistics.median(posts):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(run(clients=args.clients, messages=args.messages, rate=args.rate, seconds=args.seconds))


if __name__ == "__main__":
    main()
