"""A Docker engine of the tests' own: Debian's ``dockerd`` started privately.

The container tests never touch a user's Docker: they start ``dockerd`` with a
configuration file of their own (its own data root, exec root, pid file and unix
socket, nothing under /etc changed) and point every ``docker`` and ``docker-compose``
command at its socket through ``DOCKER_HOST``. The data root lives outside the clone
(``~/.cache/interchange/docker``, or ``INTERCHANGE_DOCKER_CACHE``) so that a later run
on the same machine reuses its images and build cache; one run at a time holds it.

Containers get ``nofile`` 1024 and ``nproc`` 1000 as default limits: this machine
refuses higher ones.

    engine_unavailable()  why no private engine can start here, or None
    private_engine()      a started engine (its DOCKER_HOST); stopped afterwards
    compose_command()     ``docker compose``, or ``docker-compose`` without the v2 plugin
"""

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import EngineFailed

DEBIAN_PACKAGES = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}
_START_SECONDS = 60
_STOP_SECONDS = 30


@dataclass(frozen=True)
class Engine:
    """A running private engine: ``environ`` holds DOCKER_HOST for its clients."""

    socket: Path

    @property
    def environ(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def docker(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against this engine."""
        result = subprocess.run(
            ["docker", *args], env=self.environ, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise EngineFailed(f"docker {' '.join(args)} failed: {(result.stderr or result.stdout or '').strip()}")
        return result

    def answers(self) -> bool:
        try:
            return self.docker("info", check=False, timeout=20).returncode == 0
        except (subprocess.TimeoutExpired, OSError):
            return False


def cache_dir() -> Path:
    return Path(os.environ.get("INTERCHANGE_DOCKER_CACHE", Path.home() / ".cache" / "interchange" / "docker"))


def compose_command() -> list[str]:
    """``docker compose`` where the v2 plugin answers, else Debian's ``docker-compose``."""
    try:
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        plugin = None
    if plugin is not None and plugin.returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def install_packages() -> None:
    """Debian's dockerd, docker-compose and debootstrap, when missing and this is root
    on Debian; else nothing (engine_unavailable then says why)."""
    missing = [package for command, package in DEBIAN_PACKAGES.items() if shutil.which(command) is None]
    if not missing or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=environ, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=environ, capture_output=True, check=False)
        result = subprocess.run(install, env=environ, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EngineFailed(f"apt-get could not install {', '.join(missing)}: {result.stderr.strip()[-500:]}")


def engine_unavailable() -> str | None:
    """Why no private engine can be started on this machine (None: it can)."""
    if os.geteuid() != 0:
        return "starting a private Docker engine needs root"
    install_packages()
    missing = [command for command in (*DEBIAN_PACKAGES, "docker") if shutil.which(command) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian: apt-get install docker.io docker-compose debootstrap)"
    return None


def _config(*, data_root: Path, run_dir: Path) -> dict[str, object]:
    limits = {"nofile": 1024, "nproc": 1000}
    return {
        "data-root": str(data_root),
        "exec-root": str(run_dir / "exec"),
        "pidfile": str(run_dir / "dockerd.pid"),
        "hosts": [f"unix://{run_dir / 'docker.sock'}"],
        "default-ulimits": {name: {"Name": name, "Soft": value, "Hard": value} for name, value in limits.items()},
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "3"},
    }


@contextlib.contextmanager
def _holding(lock: Path) -> Iterator[None]:
    """The data root for this run alone (another run on the machine waits)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def private_engine() -> Iterator[Engine]:
    """A private dockerd, started now and stopped (its containers with it) afterwards."""
    reason = engine_unavailable()
    if reason is not None:
        raise EngineFailed(reason)
    cache = cache_dir()
    # A short path: a unix socket's path has at most 107 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="ic-docker-"))
    with _holding(cache / "lock"):
        config = run_dir / "daemon.json"
        config.write_text(json.dumps(_config(data_root=cache / "data", run_dir=run_dir), indent=1))
        log = (run_dir / "dockerd.log").open("wb")
        process = subprocess.Popen(
            ["dockerd", "--config-file", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        engine = Engine(socket=run_dir / "docker.sock")
        try:
            deadline = time.monotonic() + _START_SECONDS
            while not engine.answers():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (run_dir / "dockerd.log").read_text(errors="replace")[-2000:]
                    raise EngineFailed(f"the private dockerd did not start: {tail}")
                time.sleep(0.5)
            yield engine
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            log.close()
            shutil.rmtree(run_dir, ignore_errors=True)
