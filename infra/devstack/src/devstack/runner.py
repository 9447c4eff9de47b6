"""Starts the native services, in dependency order, and stops them all.

Each service runs in its own process group, so stopping it also stops anything it
started. ``start`` waits for each service's health URL (the compose healthcheck)
before starting the services that depend on it, and fails fast when a process
exits; its ``progress`` hook hears when each starts, while it waits (every few
seconds) and when it is healthy. ``stop`` sends SIGTERM to everything, newest first,
then SIGKILL to what has not exited after the grace period.

A service's output goes to ``<log_dir>/<instance>.log`` when there is a log_dir
(the tests read those files), else to ``output`` a line at a time when that is set
(``devstack up`` shows the lines, see devstack.console), else to this process's own.

``Supervisor`` does for a running stack what compose's ``restart: unless-stopped``
does for containers: an instance that exits is started again (at once the first
time, then after a back-off that doubles), the others keep serving, and after
``give_up_after`` restarts in a row that did not stay up it says it gave up on that
instance. ``devstack restart NAME`` asks it for a graceful restart of one instance.
"""

import contextlib
import ctypes
import ctypes.util
import dataclasses
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from devstack.compose import NativeService
from devstack.errors import StackFailed

_HEALTH_POLL_SECONDS = 0.2
_PROGRESS_EVERY_SECONDS = 5.0  # a reminder while a service is not healthy yet
# Like a container, a service sees only what compose gives it, plus what a process needs
# to run at all: a developer's exported ADMIN_PASSWORD must not reach a test stack.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "SSL_CERT_FILE")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the runner dies, even by SIGKILL,
    so that a killed test run or `make up` leaves no service behind."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_order(services: Iterable[NativeService]) -> list[NativeService]:
    """Dependencies first (a topological order of depends_on)."""
    by_name = {service.name: service for service in services}
    ordered: list[NativeService] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if any(service.name == name for service in ordered):
            return
        if name in visiting:
            raise StackFailed(f"depends_on has a cycle through {name}")
        visiting.add(name)
        for dependency in by_name[name].depends_on:
            visit(dependency)
        visiting.discard(name)
        ordered.append(by_name[name])

    for name in by_name:
        visit(name)
    return ordered


def healthy(url: str, *, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  # our own loopback URL
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False  # not up yet, or something else answers on that port


@dataclass(frozen=True)
class StartProgress:
    """One step of starting one instance: ``starting`` (spawned; its dependencies are
    healthy), ``waiting`` (not healthy yet, every few seconds), ``healthy``, or
    ``started`` (it has no health check to wait for)."""

    service: NativeService
    state: Literal["starting", "waiting", "healthy", "started"]
    elapsed: float  # seconds since it was spawned


Progress = Callable[[StartProgress], None]
# Each line an instance writes (stdout and stderr), with the newline, by instance name.
Output = Callable[[str, bytes], None]


def _no_progress(_step: StartProgress) -> None:
    return


@dataclass
class RunningService:
    service: NativeService
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None = None
    relay: threading.Thread | None = None  # passes its lines to NativeStack.output

    def close_output(self) -> None:
        """After the process has ended: close its log, let the relay pass on the last lines."""
        if self.log is not None:
            self.log.close()
        if self.relay is not None:
            self.relay.join(timeout=2.0)


def _relay(*, name: str, lines: IO[bytes], output: Output) -> None:
    with lines:
        for line in lines:
            # Our own stdout may be gone (a closed pipe): keep reading, or the service
            # would block on a full pipe.
            with contextlib.suppress(OSError, ValueError):
                output(name, line)


@dataclass
class NativeStack:
    services: list[NativeService]
    bin_dir: Path
    log_dir: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    running: list[RunningService] = field(default_factory=list)
    output: Output | None = None  # used only without a log_dir

    def start(self, *, health_timeout: float = 60.0, progress: Progress | None = None) -> None:
        report = progress or _no_progress
        try:
            for service in start_order(self.services):
                report(StartProgress(service=service, state="starting", elapsed=0.0))
                self._spawn(service)
                self._wait_healthy(self.running[-1], deadline=time.monotonic() + health_timeout, progress=report)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, service: NativeService) -> None:
        env = {
            **{name: os.environ[name] for name in _INHERITED if name in os.environ},
            **self.extra_env,
            **service.environment,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        log = None
        stdout: IO[bytes] | int | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = stdout = (self.log_dir / f"{service.name}.log").open("ab")
        elif self.output is not None:
            stdout = subprocess.PIPE
        process = subprocess.Popen(
            service.command,
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only prctl, before exec
        )
        relay = None
        if stdout is subprocess.PIPE and process.stdout is not None and self.output is not None:
            relay = threading.Thread(
                target=_relay,
                kwargs={"name": service.name, "lines": process.stdout, "output": self.output},
                name=f"output of {service.name}",
                daemon=True,
            )
            relay.start()
        self.running.append(RunningService(service=service, process=process, log=log, relay=relay))

    def _wait_healthy(self, running: RunningService, *, deadline: float, progress: Progress = _no_progress) -> None:
        url = running.service.health_url
        started = reminded = time.monotonic()
        if url is None:
            progress(StartProgress(service=running.service, state="started", elapsed=0.0))
            return
        while time.monotonic() < deadline:
            code = running.process.poll()
            if code is not None:
                raise StackFailed(
                    f"{running.service.name} exited with code {code} while starting{self._log_hint(running)}"
                )
            if healthy(url):
                progress(StartProgress(service=running.service, state="healthy", elapsed=time.monotonic() - started))
                return
            time.sleep(_HEALTH_POLL_SECONDS)
            now = time.monotonic()
            if now - reminded >= _PROGRESS_EVERY_SECONDS:
                reminded = now
                progress(StartProgress(service=running.service, state="waiting", elapsed=now - started))
        raise StackFailed(f"{running.service.name} was not healthy at {url} in time{self._log_hint(running)}")

    def _log_hint(self, running: RunningService) -> str:
        if self.log_dir is None:
            return ""
        return f" (log: {self.log_dir / (running.service.name + '.log')})"

    def _running(self, name: str) -> RunningService:
        for running in self.running:
            if running.service.name == name:
                return running
        raise KeyError(f"{name} is not running here")

    def kill(self, name: str, *, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal one service's process group (fault tests) and, for SIGKILL, reap it."""
        running = self._running(name)
        _signal_group(running.process, sig)
        if sig is signal.SIGKILL:
            running.process.wait()

    def restart(
        self,
        name: str,
        *,
        environment: Mapping[str, str] | None = None,
        health_timeout: float = 60.0,
        grace_seconds: float = 10.0,
    ) -> None:
        """Start one service again (stopping it first if it still runs), with these
        extra variables for this run only, and wait until it is healthy."""
        old = self._running(name)
        _signal_group(old.process, signal.SIGTERM)
        try:
            old.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            _signal_group(old.process, signal.SIGKILL)
            old.process.wait()
        old.close_output()
        self.running.remove(old)
        # From the service as planned: a restart's extra variables hold for that run only.
        planned = next(service for service in self.services if service.name == name)
        self._spawn(dataclasses.replace(planned, environment={**planned.environment, **(environment or {})}))
        self._wait_healthy(self.running[-1], deadline=time.monotonic() + health_timeout)

    def returncode(self, name: str) -> int | None:
        """The exit status of one service's process; None while it runs."""
        return self._running(name).process.poll()

    def exited(self) -> list[str]:
        """Names of services whose process has ended."""
        return [running.service.name for running in self.running if running.process.poll() is not None]

    def stop(self, *, grace_seconds: float = 10.0) -> None:
        for running in reversed(self.running):
            _signal_group(running.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for running in reversed(self.running):
            try:
                running.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(running.process, signal.SIGKILL)
                running.process.wait()
            running.close_output()
        self.running.clear()

    def write_state(self, path: Path) -> None:
        """Record this runner and its services, for ``stop_from_state`` in another process."""
        path.parent.mkdir(parents=True, exist_ok=True)
        services = {r.service.name: r.process.pid for r in self.running}
        written = path.with_suffix(".tmp")
        written.write_text(json.dumps({"runner": os.getpid(), "services": services}))
        written.replace(path)  # whole, for a reader at any moment


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0  # seconds before the second restart in a row; doubled each time
    max_delay: float = 30.0
    give_up_after: int = 5  # restarts in a row that did not stay up
    stays_up_after: float = 30.0  # seconds of running after which the count starts again


@dataclass
class Supervisor:
    """Restarts what exits, one ``check`` at a time (the caller's loop calls it)."""

    stack: NativeStack
    say: Callable[[str], None]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    state_file: Path | None = None  # rewritten after each restart (devstack down, restart)
    health_timeout: float = 60.0
    given_up: set[str] = field(default_factory=set)
    _failures: dict[str, int] = field(default_factory=dict)  # restarts in a row, by instance
    _due: dict[str, float] = field(default_factory=dict)  # when an exited instance starts again
    _started: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        now = time.monotonic()
        for running in list(self.stack.running):
            name = running.service.name
            if name in self.given_up:
                continue
            code = running.process.poll()
            if code is None:
                if now - self._started.get(name, 0.0) >= self.policy.stays_up_after:
                    self._failures.pop(name, None)
                continue
            if name not in self._due and not self._schedule(name, code=code, now=now):
                continue
            if now >= self._due[name]:
                del self._due[name]
                self._restart(name)

    def _schedule(self, name: str, *, code: int, now: float) -> bool:
        failures = self._failures.get(name, 0)
        if failures >= self.policy.give_up_after:
            self.given_up.add(name)
            self.say(
                f"gave up on {name}: it exited {failures + 1} times without staying up"
                f" {self.policy.stays_up_after:g} s (the rest keep running; Ctrl-C stops everything)"
            )
            return False
        delay = 0.0 if failures == 0 else min(self.policy.first_delay * 2 ** (failures - 1), self.policy.max_delay)
        self.say(f"{name} exited with code {code}; starting it again" + (f" in {delay:g} s" if delay else ""))
        self._due[name] = now + delay
        return True

    def _restart(self, name: str) -> None:
        self._failures[name] = self._failures.get(name, 0) + 1
        self._started[name] = time.monotonic()
        try:
            self.stack.restart(name, health_timeout=self.health_timeout)
        except StackFailed as e:
            self.say(f"{name} did not come back: {e}")
            return
        self._started[name] = time.monotonic()
        if self.state_file is not None:
            self.stack.write_state(self.state_file)
        self.say(f"{name} is back")


def request_restart(path: Path, name: str, *, timeout: float = 120.0) -> None:
    """Restart one instance of the stack a ``devstack up`` in another terminal runs:
    SIGTERM to it (it drains, as under compose), then wait until that runner has
    started it again and found it healthy."""
    if not path.exists():
        raise StackFailed("no native stack is running here (devstack up writes .run/native-stack.json)")
    services: dict[str, int] = json.loads(path.read_text())["services"]
    if name not in services:
        raise StackFailed(f"no instance {name!r}; running: {', '.join(sorted(services))}")
    old = services[name]
    if _alive(old):
        os.killpg(old, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = json.loads(path.read_text())["services"].get(name) if path.exists() else None
        if now is not None and now != old:
            return
        time.sleep(0.2)
    raise StackFailed(f"{name} was not back within {timeout:g} s (see its log)")


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return


def stop_from_state(path: Path, *, grace_seconds: float = 10.0) -> list[str]:
    """Stop a stack that ``devstack up`` started in another terminal (``make down``).

    The runner is asked to stop (it stops its services in order and exits); its
    services are signalled directly only when the runner is gone.
    """
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    services: dict[str, int] = state["services"]
    runner: int = state["runner"]
    deadline = time.monotonic() + grace_seconds + 5
    if _alive(runner):
        os.kill(runner, signal.SIGTERM)
        while time.monotonic() < deadline and _alive(runner):
            time.sleep(0.1)
    for pid in services.values():
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
    for pid in services.values():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return list(services)


def _alive(pid: int) -> bool:
    try:
        # A child of ours that has exited stays a zombie (and "alive" to kill 0) until reaped.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its own parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
