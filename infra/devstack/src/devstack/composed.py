"""The compose deployment in a private engine, run the way a user runs it.

``compose_deployment`` runs ``python -m devstack up`` (``make up``'s Docker branch:
``docker compose up --build``, or ``docker-compose`` where the v2 plugin is missing)
against the engine, with docker-compose.yml and the caller's override files (no
Consul: see devstack.standins; no compose profile either), a project name of its
own and free ports on this machine for everything compose publishes. It waits until the
gateway's container is healthy (the gateway starts only once every other service's
healthcheck passed), and afterwards stops compose as Ctrl-C would and removes the
containers, networks and volumes.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.compose import default_ports, load_compose
from devstack.engine import Engine, compose_command
from devstack.errors import EngineFailed
from devstack.testing import free_port

PROJECT = "ic-compose-test"
_HOST_PORT = re.compile(r"\$\{([A-Z0-9_]+_HOST_PORT):-\d+\}")
_UP_SECONDS = 900  # the first run builds every image
_STOP_SECONDS = 120


@dataclass(frozen=True)
class Deployment:
    engine: Engine
    project: str
    ports: dict[str, int]  # every *_HOST_PORT variable and the port it was given
    published: dict[tuple[str, int], int]  # our services' (service, container port) → port here

    def url(self, service: str, container_port: int) -> str:
        return f"http://127.0.0.1:{self.port(service, container_port)}"

    def port(self, service: str, container_port: int) -> int:
        try:
            return self.published[(service, container_port)]
        except KeyError:
            raise KeyError(f"{service} publishes no port {container_port}") from None

    def run_in_image(self, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """``argv`` in a new container of the image ``service`` runs, as that image's user."""
        image = _image_of(self.engine, project=self.project, service=service)
        return self.engine.docker("run", "--rm", "--network", "none", image, *argv, check=False)

    def restart(self, service: str, *, timeout: float = 120) -> None:
        """Restart one service's container (``docker restart``: SIGTERM, the stop grace,
        then start) and wait until its health check passes again."""
        container = _container(self.engine, project=self.project, service=service)
        if container is None:
            raise EngineFailed(f"{service} has no container")
        self.engine.docker("restart", container)
        deadline = time.monotonic() + timeout
        while (health := _container_health(self.engine, project=self.project, service=service)) not in (
            "healthy",
            "running",  # a container without a health check
        ):
            if time.monotonic() > deadline or health == "unhealthy":
                raise EngineFailed(f"{service}'s container is {health} after its restart")
            time.sleep(0.5)  # docker reports health only when asked: poll it

    def logs(self, services: Iterable[str]) -> dict[str, str]:
        """What each service's container wrote so far (stdout and stderr, in order)."""
        found: dict[str, str] = {}
        for service in services:
            container = _container(self.engine, project=self.project, service=service)
            if container is not None:
                result = self.engine.docker("logs", container)
                found[service] = result.stdout + result.stderr
        return found


def _image_of(engine: Engine, *, project: str, service: str) -> str:
    container = _container(engine, project=project, service=service)
    if container is None:
        raise EngineFailed(f"{service} has no container")
    return engine.docker("inspect", "--format", "{{.Config.Image}}", container).stdout.strip()


def _container(engine: Engine, *, project: str, service: str) -> str | None:
    found = engine.docker(
        "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={project}",
        "--filter", f"label=com.docker.compose.service={service}", check=False,
    ).stdout.split()  # fmt: skip
    return found[0] if found else None


def _container_health(engine: Engine, *, project: str, service: str) -> str:
    container = _container(engine, project=project, service=service)
    if container is None:
        return "absent"
    state = engine.docker("inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", container)
    return state.stdout.strip() or "running"


def _tail(log: Path, lines: int = 30) -> str:
    """The end of compose's output, and where the rest is."""
    text = log.read_text(errors="replace").splitlines()
    return "\n".join([*text[-lines:], f"(all of it: {log})"])


@contextlib.contextmanager
def compose_deployment(
    *, engine: Engine, root: Path, log: Path, overrides: Sequence[Path] = ()
) -> Iterator[Deployment]:
    compose_file = root / "docker-compose.yml"
    named = [name for path in (compose_file, *overrides) for name in _HOST_PORT.findall(path.read_text())]
    ports = {name: free_port() for name in dict.fromkeys(named)}
    environ = {
        **engine.environ,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "COMPOSE_FILE": os.pathsep.join(str(path) for path in (compose_file, *overrides)),
        # No profile: .env's COMPOSE_PROFILES (observability) names images no stand-in imitates.
        "COMPOSE_PROFILES": "",
        **{name: str(port) for name, port in ports.items()},
    }
    compose = [*compose_command(), "--project-name", PROJECT]
    # A run that was interrupted leaves its containers: start from nothing.
    subprocess.run([*compose, "down", "--volumes", "--remove-orphans"], cwd=root, env=environ, capture_output=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        up = subprocess.Popen(
            [sys.executable, "-m", "devstack", "up", "--root", str(root)],
            cwd=root,
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + _UP_SECONDS
            while (health := _container_health(engine, project=PROJECT, service="gateway")) != "healthy":
                if up.poll() is not None:
                    raise EngineFailed(f"make up's compose exited with {up.returncode}:\n{_tail(log)}")
                if time.monotonic() > deadline or health == "unhealthy":
                    raise EngineFailed(f"the gateway's container is {health}:\n{_tail(log)}")
                time.sleep(2)
            document = load_compose(compose_file=compose_file, env_file=root / ".env", environ=environ)
            published = default_ports(document)
            yield Deployment(engine=engine, project=PROJECT, ports=ports, published=published)
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGINT)  # Ctrl-C: compose stops the containers
                try:
                    up.wait(timeout=_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    os.killpg(up.pid, signal.SIGKILL)
                    up.wait()
            subprocess.run(
                [*compose, "down", "--volumes", "--remove-orphans"], cwd=root, env=environ, capture_output=True
            )
