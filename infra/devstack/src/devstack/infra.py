"""Finds the PostgreSQL, Redis and RabbitMQ servers the stack runs against.

Order: URLs from the environment (POSTGRES_URL, REDIS_URL, RABBITMQ_URL), then the
standard local ports. When one is absent and we run as root on Debian, it is
installed from Debian's packages and started; otherwise we stop with a message that
says exactly what to install or start. Servers found running are never
reconfigured or stopped.
"""

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from devstack.errors import InfraMissing

POSTGRES_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    # The role this module creates when it installs PostgreSQL itself.
    "postgresql://interchange:interchange@127.0.0.1:5432/postgres",
)
REDIS_CANDIDATES = ("redis://127.0.0.1:6379/0",)
RABBITMQ_CANDIDATES = ("amqp://guest:guest@127.0.0.1:5672/",)
_DEBIAN_PACKAGES = {"postgres": "postgresql", "redis": "redis-server", "rabbitmq": "rabbitmq-server"}
_START_COMMANDS = {
    "postgres": ["sh", "-c", "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | tail -n 1) main start"],
    "redis": [
        "redis-server",
        "--daemonize",
        "yes",
        "--bind",
        "127.0.0.1",
        "-::1",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
    ],
    "rabbitmq": ["rabbitmq-server", "-detached"],
}
_HOW_TO = {
    "postgres": "PostgreSQL 15+ on 127.0.0.1:5432 with a role that may create databases "
    "(Debian: apt-get install postgresql), or set POSTGRES_URL=postgresql://USER:PASSWORD@HOST:PORT/postgres",
    "redis": "Redis on 127.0.0.1:6379 (Debian: apt-get install redis-server), or set REDIS_URL=redis://HOST:PORT/0",
    "rabbitmq": "RabbitMQ on 127.0.0.1:5672 with guest/guest (Debian: apt-get install rabbitmq-server), "
    "or set RABBITMQ_URL=amqp://USER:PASSWORD@HOST:PORT/",
}


@dataclass(frozen=True, slots=True)
class Infra:
    postgres_url: str
    redis_url: str
    rabbitmq_url: str
    # A Consul agent (host:port) when CONSUL_HTTP_ADDR names one; none runs here by default.
    consul_http_addr: str = ""

    def url_of(self, service: str) -> str:
        return {"postgres": self.postgres_url, "redis": self.redis_url, "rabbitmq": self.rabbitmq_url}[service]


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


async def _postgres_ok(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        return bool(await conn.fetchval("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"))
    finally:
        await conn.close()


def _redis_ok(url: str) -> bool:
    try:
        with socket.create_connection(_host_port(url, 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def _rabbitmq_ok(url: str) -> bool:
    try:
        with socket.create_connection(_host_port(url, 5672), timeout=2) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            # A broker answers the protocol header with a Connection.Start method frame.
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def _first_working(name: str) -> str | None:
    env_name = {"postgres": "POSTGRES_URL", "redis": "REDIS_URL", "rabbitmq": "RABBITMQ_URL"}[name]
    candidates = {"postgres": POSTGRES_CANDIDATES, "redis": REDIS_CANDIDATES, "rabbitmq": RABBITMQ_CANDIDATES}[name]
    offered = os.environ.get(env_name)
    for url in (offered,) if offered else candidates:
        if name == "postgres" and asyncio.run(_postgres_ok(url)):
            return url
        if name == "redis" and _redis_ok(url):
            return url
        if name == "rabbitmq" and _rabbitmq_ok(url):
            return url
    return None


def _can_install() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def _install_and_start(missing: list[str]) -> None:
    packages = [_DEBIAN_PACKAGES[name] for name in missing]
    print(f"devstack: installing {', '.join(packages)} from Debian's packages", flush=True)  # noqa: T201
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)
    for name in missing:
        subprocess.run(_START_COMMANDS[name], check=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if all(_first_working(name) or name == "postgres" for name in missing):
            break
        time.sleep(1)
    if "postgres" in missing:
        # Debian's PostgreSQL trusts no TCP login: add a role for the stack to use.
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                "psql",
                "-c",
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'interchange') THEN "
                "CREATE ROLE interchange LOGIN CREATEDB PASSWORD 'interchange'; END IF; END $$;",
            ],
            check=True,
        )


def ensure_infra() -> Infra:
    """The servers to use; installs missing ones where allowed, else raises InfraMissing."""
    found = {name: _first_working(name) for name in ("postgres", "redis", "rabbitmq")}
    missing = [name for name, url in found.items() if url is None]
    if missing and _can_install():
        _install_and_start(missing)
        found = {name: _first_working(name) for name in ("postgres", "redis", "rabbitmq")}
        missing = [name for name, url in found.items() if url is None]
    if missing:
        lines = "\n".join(f"  - {_HOW_TO[name]}" for name in missing)
        raise InfraMissing(f"Interchange needs these servers and could not find them:\n{lines}")
    return Infra(
        postgres_url=found["postgres"] or "",
        redis_url=found["redis"] or "",
        rabbitmq_url=found["rabbitmq"] or "",
        consul_http_addr=os.environ.get("CONSUL_HTTP_ADDR", ""),
    )


def _admin_dsn(server_url: str) -> str:
    parts = urlsplit(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))


_DATABASE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _check_names(names: set[str]) -> None:
    bad = sorted(name for name in names if not _DATABASE_NAME.fullmatch(name))
    if bad:
        raise ValueError(f"not a plain database name: {', '.join(bad)}")


async def create_databases(*, server_url: str, names: set[str]) -> None:
    _check_names(names)
    conn = await asyncpg.connect(_admin_dsn(server_url))
    try:
        existing = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        for name in sorted(names - existing):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_databases(*, server_url: str, names: set[str]) -> None:
    _check_names(names)
    conn = await asyncpg.connect(_admin_dsn(server_url))
    try:
        for name in sorted(names):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
