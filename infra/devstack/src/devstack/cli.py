"""``python -m devstack COMMAND`` (the Makefile's targets call these).

infra     find (or install) PostgreSQL, Redis and RabbitMQ; print where they are
secrets   make .env and the development signing key when missing
up        docker compose up --build when a Docker engine answers (docker-compose
          where the v2 plugin is missing), else every
          service as a local process in the foreground; Ctrl-C stops them.
          Natively it says how each instance's start goes (starting, waiting for its
          health URL, healthy), then shows the services' lines: on a terminal made
          readable, behind each instance's name in its colour as compose does;
          elsewhere, or with DEVSTACK_LOG_FORMAT=json, exactly as written (JSON and
          unprefixed, so each line stays valid JSON). DEVSTACK_LOG_FORMAT=pretty
          forces readable lines; NO_COLOR turns colours off (devstack.console)
down      stop what ``up`` started
restart   one instance of a running native ``up``, gracefully: ``restart order-service-2``
          (``up`` also starts again, by itself, an instance that exits)
swarm     ``swarm render``: deploy/swarm/stack.yml from docker-compose.yml;
          ``swarm secrets``: the stack's secret files (.secrets/swarm/) from .env
trace     a trace the native stack recorded, as a tree: ``trace <id>`` by trace id,
          traceparent or request id (X-Request-ID); ``trace`` alone lists recent ones
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from devstack.compose import read_env_file
from devstack.console import ServiceOutput, choose_log_format, progress_message, wants_colour
from devstack.engine import compose_command
from devstack.errors import DevstackError
from devstack.infra import ensure_infra
from devstack.otlp import connected, find_trace_id, read_spans_file, recent, render
from devstack.runner import Supervisor, request_restart, stop_from_state
from devstack.secrets import ensure_dev_secrets
from devstack.stack import Stack, StackOptions
from devstack.swarm import SECRETS_DIR, STACK_FILE, stack_text, write_secret_files
from interchange_common.servicejwt import KNOWN_SERVICES, ServiceTokenIssuer

STATE_FILE = Path(".run/native-stack.json")
SPANS_FILE = Path(".run/traces.jsonl")


def _say(message: str) -> None:
    # One write: the services' lines come from other threads (devstack.console).
    sys.stdout.write(f"devstack: {message}\n")
    sys.stdout.flush()


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=20)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0


def _warn_about_stale_env(root: Path) -> None:
    missing = sorted(set(read_env_file(root / ".env.example")) - set(read_env_file(root / ".env")))
    if missing:
        _say(f".env lacks {', '.join(missing)} (see .env.example); defaults apply where there are any")


def _up(root: Path) -> int:
    ensure_dev_secrets(root=root)
    _warn_about_stale_env(root)
    if docker_engine_answers():
        compose = compose_command()
        _say(f"a Docker engine answers: {' '.join(compose)} up --build")
        # Become compose: Ctrl-C reaches it directly and it stops the containers itself.
        os.chdir(root)
        os.execvp(compose[0], [*compose, "up", "--build"])
    terminal = sys.stdout.isatty()
    log_format = choose_log_format(environ=os.environ, isatty=terminal)
    _say("no Docker engine: running every service as a local process")
    infra = ensure_infra()
    stack = Stack.prepare(options=StackOptions(root=root, env_file=root / ".env"), infra=infra)
    stack.native.output = ServiceOutput(
        names=[service.name for service in stack.services],
        stream=sys.stdout,
        log_format=log_format,
        colour=wants_colour(environ=os.environ, isatty=terminal),
    )
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start(progress=lambda step: _say(progress_message(step)))
        stack.native.write_state(root / STATE_FILE)
        _say(f"ready: gateway on {stack.url('gateway', 8080)} (Ctrl-C stops everything)")
        # As compose's restart policy: what exits is started again, the rest keep serving.
        supervisor = Supervisor(stack=stack.native, say=_say, state_file=root / STATE_FILE)
        while not stopping:
            supervisor.check()
            time.sleep(0.5)
        return 0
    finally:
        _say("stopping")
        stack.stop()
        (root / STATE_FILE).unlink(missing_ok=True)


def _service_token(*, root: Path, audience: str, caller: str) -> str:
    """A service token signed with .env's SERVICE_JWT_SECRET, for calling internal APIs
    by hand (curl, grpcurl) on a development stack, as ``caller`` (services accept
    tokens from the deployment's own services only)."""
    secret = read_env_file(root / ".env").get("SERVICE_JWT_SECRET")
    if not secret:
        raise DevstackError("SERVICE_JWT_SECRET is not set in .env")
    return ServiceTokenIssuer(service=caller, secret=secret, ttl_seconds=3600).token_for(audience=audience)


def _down(root: Path) -> int:
    if docker_engine_answers():
        return subprocess.call([*compose_command(), "down"], cwd=root)
    stopped = stop_from_state(root / STATE_FILE)
    _say(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _trace(*, spans_file: Path, key: str | None) -> int:
    spans = read_spans_file(spans_file)
    if key is None:
        lines = recent(spans)
        print("\n".join(lines) if lines else "no request traced yet")  # noqa: T201  # the command's output
        return 0
    trace_id = find_trace_id(key=key, spans=spans)
    if trace_id is None:
        _say(f"no trace for {key!r} in {spans_file} (sampled out, or not exported yet: spans leave in batches)")
        return 1
    print(render(connected(trace_id=trace_id, spans=spans)))  # noqa: T201  # the command's output
    return 0


def _swarm(*, root: Path, action: str | None) -> int:
    if action == "render":
        (root / STACK_FILE).parent.mkdir(parents=True, exist_ok=True)
        (root / STACK_FILE).write_text(stack_text(root=root))
        _say(f"wrote {STACK_FILE}")
        return 0
    if action == "secrets":
        ensure_dev_secrets(root=root)
        written = write_secret_files(root=root, variables={**read_env_file(root / ".env"), **os.environ})
        _say(f"wrote {len(written)} secret files in {SECRETS_DIR}/")
        return 0
    raise DevstackError("swarm what? (devstack swarm render | devstack swarm secrets)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devstack")
    parser.add_argument(
        "command", choices=["infra", "secrets", "up", "down", "restart", "service-token", "swarm", "trace"]
    )
    parser.add_argument(
        "key",
        nargs="?",
        help="trace: a trace id, traceparent or request id; restart: an instance (order-service-2);"
        " swarm: render or secrets",
    )
    parser.add_argument("--spans", type=Path, help=f"trace: the spans file (default: {SPANS_FILE})")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--audience", default="event-store", help="service-token: the service to call")
    parser.add_argument(
        "--caller", default="order-service", choices=sorted(KNOWN_SERVICES), help="service-token: calling as"
    )
    args = parser.parse_intermixed_args(argv)
    root: Path = args.root.resolve()
    os.chdir(root)
    try:
        if args.command == "infra":
            infra = ensure_infra()
            where = {name: urlsplit(infra.url_of(name)) for name in ("postgres", "redis", "rabbitmq")}
            _say(", ".join(f"{name} on {parts.hostname}:{parts.port}" for name, parts in where.items()))
            code = 0
        elif args.command == "secrets":
            ensure_dev_secrets(root=root)
            code = 0
        elif args.command == "service-token":
            print(_service_token(root=root, audience=args.audience, caller=args.caller))  # noqa: T201  # the command's output
            code = 0
        elif args.command == "up":
            code = _up(root)
        elif args.command == "restart":
            if not args.key:
                raise DevstackError("restart which instance? (devstack restart order-service-2)")
            if docker_engine_answers():
                code = subprocess.call([*compose_command(), "restart", args.key], cwd=root)
            else:
                request_restart(root / STATE_FILE, args.key)
                _say(f"{args.key} restarted")
                code = 0
        elif args.command == "swarm":
            code = _swarm(root=root, action=args.key)
        elif args.command == "trace":
            code = _trace(spans_file=args.spans.resolve() if args.spans else root / SPANS_FILE, key=args.key)
        else:
            code = _down(root)
    except DevstackError as e:
        _say(str(e))
        code = 2
    sys.exit(code)
