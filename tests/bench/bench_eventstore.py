"""Appends per second of the event store's storage layer, in-process, against
pgbench's single-row INSERT transactions at the same concurrency, in one run.

    pgbench      8 clients, one INSERT of a small JSON row per transaction
    single       8 concurrent writers, one event per append (each its own stream)
    batch        8 concurrent writers, 100 events per append

Prints appends/s and events/s, single/pgbench and batch/single (events per second).
The sequencer runs as in production. A benchmark, not a test: it asserts nothing.
"""

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import tempfile
import time
import uuid
from urllib.parse import urlsplit

from pydantic import SecretStr

from devstack.infra import Infra, ensure_infra
from devstack.testing import throwaway_database
from event_store.bootstrap import MIGRATIONS, build
from event_store.config import Settings
from event_store.domain.model import ExpectedVersion, NewEvent
from interchange_common.migrations import upgrade

WRITERS = 8
PGBENCH_SQL = """INSERT INTO probe (payload) VALUES ('{"sku": "A-1", "quantity": 2}');\n"""


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201  # a benchmark reports on stdout


def pgbench(*, server_url: str, database: str, seconds: int) -> float:
    parts = urlsplit(server_url)
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    connection = [
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
    ]
    subprocess.run(
        ["psql", *connection, "-d", database, "-qc", "CREATE TABLE probe (id bigserial PRIMARY KEY, payload jsonb)"],
        check=True,
        env=env,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(PGBENCH_SQL)
        script.flush()
        output = subprocess.run(
            [
                "pgbench",
                *connection,
                "-n",
                "-c",
                str(WRITERS),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                script.name,
                database,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
    return float(re.search(r"tps = ([\d.]+)", output).group(1))  # type: ignore[union-attr]


async def appends_per_second(*, storage, seconds: float, batch: int) -> float:
    stop = time.perf_counter() + seconds
    appends = 0

    async def writer() -> None:
        nonlocal appends
        stream = f"bench-{uuid.uuid4()}"
        version = 0
        while time.perf_counter() < stop:
            events = [
                NewEvent(uuid.uuid4(), "order.item_added", {"sku": "A-1", "quantity": 2}, {}) for _ in range(batch)
            ]
            await storage.append(stream_id=stream, expected=ExpectedVersion.exact(version), events=events)
            version += batch
            appends += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return appends / (time.perf_counter() - started)


async def measure(*, infra: Infra, seconds: int) -> None:
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_bench_pgbench") as probe_url:
        tps = await asyncio.to_thread(
            pgbench, server_url=infra.postgres_url, database=urlsplit(probe_url).path.strip("/"), seconds=seconds
        )
    async with throwaway_database(server_url=infra.postgres_url, prefix="ic_bench_events") as url:
        await asyncio.to_thread(upgrade, script_location=MIGRATIONS, database_url=url)
        settings = Settings(
            environment="development",
            service_jwt_secret=SecretStr("bench-only-" + "s" * 32),
            database_url=SecretStr(url),
            database_pool_size=16,
            rabbitmq_url=SecretStr(infra.rabbitmq_url),
        )
        container = await build(settings=settings)
        sequencer = asyncio.create_task(container.sequencer.run())
        try:
            await appends_per_second(storage=container.storage, seconds=2, batch=1)  # warm-up
            single = await appends_per_second(storage=container.storage, seconds=seconds, batch=1)
            batched = await appends_per_second(storage=container.storage, seconds=seconds, batch=100)
        finally:
            sequencer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sequencer
            await container.close()
    say(f"{WRITERS} concurrent writers, {seconds} s each")
    say(f"{'what':<28}{'per second':>12}")
    say(f"{'pgbench INSERT transactions':<28}{tps:>12.0f}")
    say(f"{'single-event appends':<28}{single:>12.0f}")
    say(f"{'100-event appends':<28}{batched:>12.0f}")
    say(f"{'events in 100-event appends':<28}{batched * 100:>12.0f}")
    say(f"single appends / pgbench      = {single / tps:.2f}x")
    say(f"batch events / single events  = {batched * 100 / single:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(measure(infra=ensure_infra(), seconds=args.seconds))


if __name__ == "__main__":
    main()
