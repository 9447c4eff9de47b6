"""The Swarm stack in a private engine, deployed and rolled the way an operator does.

``swarm_deployment`` makes the private engine a single-node swarm, builds every image
of ours under two tags (the second one a different image: a label differs, so an
update to it replaces every task, which a redeploy of the same image would not),
writes the stack's secret files from .env, runs ``docker stack deploy`` with
deploy/swarm/stack.yml and the caller's override files, and waits until every
service has all its tasks and the gateway answers through the edge. ``roll()`` moves
every service of ours to the second tag, one service after the other, and waits until
each rolling update has ended. Afterwards the stack is removed and the node leaves
the swarm.
"""

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.compose import read_env_file
from devstack.engine import Engine
from devstack.errors import EngineFailed
from devstack.swarm import STACK_FILE, write_secret_files
from devstack.testing import free_port, wait_for

STACK = "ic-swarm-test"
SERVICES = ("user-service", "event-store", "order-service", "notification-service", "gateway")
TAGS = ("swarm-test-1", "swarm-test-2")
_DEPLOY_SECONDS = 600
_ROLL_SECONDS = 300  # each service's update
_REMOVE_SECONDS = 120
_IN_STACK = f"label=com.docker.stack.namespace={STACK}"
_COMPLETED = re.compile(r"\((\d+/\d+) completed\)")


@dataclass
class SwarmDeployment:
    engine: Engine
    root: Path
    files: Sequence[Path]
    environ: Mapping[str, str]
    http_port: int

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def deploy(self, *, tag: str) -> None:
        arguments = ["stack", "deploy", "--resolve-image", "never", "--prune"]
        for file in self.files:
            arguments += ["--compose-file", str(file)]
        result = subprocess.run(
            ["docker", *arguments, STACK],
            env={**self.environ, "IMAGE_TAG": tag},
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            raise EngineFailed(f"docker stack deploy failed: {(result.stderr or result.stdout).strip()}")

    def services(self) -> dict[str, dict[str, object]]:
        """Each service of the stack (short name) as ``docker service inspect`` has it."""
        names = self.engine.docker("service", "ls", "--quiet", "--filter", _IN_STACK).stdout.split()
        if not names:
            return {}
        inspected = json.loads(self.engine.docker("service", "inspect", *names).stdout)
        return {str(s["Spec"]["Name"]).removeprefix(f"{STACK}_"): s for s in inspected}

    def running(self) -> dict[str, tuple[int, int]]:
        """Each service: tasks running and tasks wanted; for a job, tasks that
        completed and completions wanted ("0/1 (1/1 completed)")."""
        lines = self.engine.docker(
            "service", "ls", "--format", "{{.Name}} {{.Replicas}}", "--filter", _IN_STACK
        ).stdout.splitlines()
        counts = {}
        for line in lines:
            name, _, replicas = line.partition(" ")
            completed = _COMPLETED.search(replicas)
            done, _, wanted = (completed.group(1) if completed else replicas.split(" ")[0]).partition("/")
            counts[name.removeprefix(f"{STACK}_")] = (int(done), int(wanted or 0))
        return counts

    def task_errors(self) -> list[str]:
        """Why tasks failed, as Swarm recorded it (for a failure's message)."""
        ps = self.engine.docker(
            "stack", "ps", STACK, "--no-trunc", "--format", "{{.Name}} {{.CurrentState}} {{.Error}}", check=False
        )
        return [line for line in ps.stdout.splitlines() if "Failed" in line or "Rejected" in line][:20]

    def wait_until_serving(self, *, timeout: float = _DEPLOY_SECONDS) -> None:
        def serving() -> bool:
            counts = self.running()
            full = bool(counts) and all(running == wanted and wanted > 0 for running, wanted in counts.values())
            return full and _answers(f"{self.gateway_url}/health")

        try:
            # Swarm converges by itself: poll its state.
            wait_for(serving, timeout=timeout, interval=2, what="every task running and the gateway answering")
        except TimeoutError as e:
            raise EngineFailed(f"the stack is not serving: {self.running()}; failed tasks: {self.task_errors()}") from e

    def roll(self, *, tag: str = TAGS[1], timeout: float = _ROLL_SECONDS) -> dict[str, str]:
        """Move every service of ours, one service after the other, to the image ``tag``
        (``docker service update --image``: the stack's update_config rolls its tasks),
        each once the one before has ended; each service's final update state
        (``completed`` unless it failed)."""
        states: dict[str, str] = {}
        for service in SERVICES:
            self.engine.docker(
                "service", "update", "--detach", "--no-resolve-image",
                "--image", f"interchange/{service}:{tag}", f"{STACK}_{service}",
            )  # fmt: skip

            def ended(service: str = service) -> str | None:
                state = _update_state(self.services()[service])
                return None if state in ("", "updating", "rollback_started") else state

            # Swarm reports an update's state only when asked: poll it.
            states[service] = wait_for(ended, timeout=timeout, interval=1, what=f"the rolling update of {service}")
        return states

    def save_logs(self, directory: Path) -> Path:
        """What each container of the stack wrote, old tasks' too, in ``directory``
        (``docker logs`` per container: ``docker service logs`` can take minutes)."""
        directory.mkdir(parents=True, exist_ok=True)
        for container in self.engine.docker("ps", "--all", "--quiet", "--filter", _IN_STACK).stdout.split():
            name = self.engine.docker("inspect", "--format", "{{.Name}}", container).stdout.strip().lstrip("/")
            result = self.engine.docker("logs", "--timestamps", container, check=False)
            (directory / f"{name}.log").write_text(result.stdout + result.stderr)
        return directory

    def images_running(self) -> dict[str, set[str]]:
        """Each service's images of its running tasks."""
        found: dict[str, set[str]] = {}
        for service in SERVICES:
            tasks = self.engine.docker(
                "service", "ps", f"{STACK}_{service}", "--filter", "desired-state=running", "--format", "{{.Image}}"
            ).stdout.split()
            found[service] = set(tasks)
        return found


def _update_state(spec: Mapping[str, object]) -> str:
    status = spec.get("UpdateStatus")
    return str(status.get("State", "")) if isinstance(status, dict) else ""


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def build_images(*, engine: Engine, root: Path) -> None:
    """Every service's image under each of TAGS; the second differs by a label."""
    for service in SERVICES:
        for number, tag in enumerate(TAGS, start=1):
            result = subprocess.run(
                ["docker", "build", "--quiet", "--file", f"{service}/Dockerfile",
                 "--tag", f"interchange/{service}:{tag}", "--label", f"org.interchange.release={number}", "."],
                cwd=root,
                # The classic builder: BuildKit would fetch its frontend from a registry.
                env={**engine.environ, "DOCKER_BUILDKIT": "0"},
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                raise EngineFailed(f"building interchange/{service}:{tag} failed: {result.stderr.strip()[-2000:]}")


def _leave(engine: Engine) -> None:
    engine.docker("swarm", "leave", "--force", check=False)


@contextlib.contextmanager
def swarm_deployment(*, engine: Engine, root: Path, overrides: Sequence[Path] = ()) -> Iterator[SwarmDeployment]:
    build_images(engine=engine, root=root)
    _leave(engine)  # an interrupted run's swarm: start from nothing
    engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        env = read_env_file(root / ".env")
        write_secret_files(root=root, variables={**env, **os.environ})
        http_port = free_port()
        deployment = SwarmDeployment(
            engine=engine,
            root=root,
            files=[root / STACK_FILE, *overrides],
            environ={**engine.environ, **env, "EDGE_HTTP_PORT": str(http_port), "EDGE_HTTPS_PORT": str(free_port())},
            http_port=http_port,
        )
        try:
            deployment.deploy(tag=TAGS[0])
            deployment.wait_until_serving()
            yield deployment
        finally:
            engine.docker("stack", "rm", STACK, check=False)

            def removed() -> bool:
                return not engine.docker("ps", "--quiet", "--filter", _IN_STACK, check=False).stdout.split()

            # Removal is asynchronous; the engine stops what is left when it stops.
            with contextlib.suppress(TimeoutError):
                wait_for(removed, timeout=_REMOVE_SECONDS, interval=1, what="the stack's containers to stop")
    finally:
        _leave(engine)
