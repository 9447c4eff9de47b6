"""GET one user by id three ways in one run, and the ratios between them.

    gateway   GET /api/users/{id} on the gateway: user token checked, rate limit
              counted in Redis, forwarded to user-service's /internal/users/{id}
    direct    GET /internal/users/{id} on user-service with a service token
    nginx     the same internal request through nginx as a plain reverse proxy
              (keep-alive to the upstream), the yardstick for "a proxy costs this"

wrk drives each at a fixed concurrency after a warm-up; the script prints
requests/s, p50 and p99, and gateway/direct and gateway/nginx. A benchmark, not a
test: it asserts nothing. It starts its own native stack on free ports.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.compose import read_env_file
from devstack.infra import ensure_infra
from devstack.runner import healthy
from devstack.testing import free_port, isolated_stack, run_id, wait_for
from interchange_common.servicejwt import ServiceTokenIssuer

ROOT = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = ROOT / ".env.example"
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream users {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://users;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass
class Result:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float


def say(message: str) -> None:
    print(message, flush=True)  # noqa: T201  # a benchmark reports on stdout


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def ensure_tools() -> None:
    packages = [
        package
        for tool, package in (("wrk", "wrk"), ("nginx", "nginx-light"))
        if (shutil.which(tool) if tool == "wrk" else nginx_binary()) is None
    ]
    if not packages:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"install {' and '.join(packages)} (Debian: apt-get install {' '.join(packages)})")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True)


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(*, name: str, url: str, token: str, connections: int, seconds: int, warmup: int) -> Result:
    common = ["wrk", "-t2", f"-c{connections}", "-H", f"Authorization: Bearer {token}", "--latency", url]
    subprocess.run([*common[:3], f"-d{warmup}s", *common[3:]], check=True, capture_output=True)
    output = subprocess.run([*common[:3], f"-d{seconds}s", *common[3:]], check=True, capture_output=True, text=True)
    text = output.stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if errors:
        say(f"  {name}: {errors.group(1)} non-2xx responses (the numbers below include them)")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    # Anchored: the thread-stats lines above end in percentages like "62.50%" too.
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return Result(name, rps, p50, p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    ensure_tools()
    run = run_id()
    example = read_env_file(ENV_EXAMPLE)
    workdir = Path(tempfile.mkdtemp(prefix="interchange-bench-"))
    with isolated_stack(
        root=ROOT,
        infra=ensure_infra(),
        run=run,
        purpose="bench",
        log_dir=workdir / "logs",
        only=frozenset({"gateway"}),
        env_overrides={"gateway": {"RATE_LIMIT_REQUESTS": "100000000"}},
    ) as stack:
        gateway_url, users_url = stack.url("gateway", 8080), stack.url("user-service", 8001)
        email, password = f"bench-{uuid.uuid4().hex[:8]}@example.com", "benchmark password"
        with httpx.Client(base_url=gateway_url) as client:
            user = client.post("/api/auth/register", json={"name": "Bench", "email": email, "password": password})
            user.raise_for_status()
            login = client.post("/api/auth/token", json={"email": email, "password": password})
            login.raise_for_status()
        user_id, user_token = user.json()["id"], login.json()["access_token"]
        service_token = ServiceTokenIssuer(
            service="order-service", secret=example["SERVICE_JWT_SECRET"], ttl_seconds=3600
        ).token_for(audience="user-service")

        nginx_port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=workdir, upstream=stack.port("user-service", 8001), port=nginx_port))
        nginx = subprocess.Popen([nginx_binary() or "nginx", "-c", str(conf), "-p", str(workdir)])
        try:
            nginx_url = f"http://127.0.0.1:{nginx_port}"
            wait_for(lambda: healthy(f"{nginx_url}/health/live"), timeout=10, what="nginx")
            say(f"GET one user, {args.connections} connections, {args.seconds} s each after {args.warmup} s of warm-up")
            paths = [
                ("direct", f"{users_url}/internal/users/{user_id}", service_token),
                ("nginx", f"{nginx_url}/internal/users/{user_id}", service_token),
                ("gateway", f"{gateway_url}/api/users/{user_id}", user_token),
            ]
            results = [
                wrk(
                    name=name,
                    url=url,
                    token=token,
                    connections=args.connections,
                    seconds=args.seconds,
                    warmup=args.warmup,
                )
                for name, url, token in paths
            ]
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
    say(f"{'path':<10}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for result in results:
        say(f"{result.name:<10}{result.requests_per_second:>12.0f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}")
    by_name = {result.name: result for result in results}
    gateway_rps = by_name["gateway"].requests_per_second
    say(f"gateway/direct = {gateway_rps / by_name['direct'].requests_per_second:.2f}x")
    say(f"gateway/nginx  = {gateway_rps / by_name['nginx'].requests_per_second:.2f}x")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
