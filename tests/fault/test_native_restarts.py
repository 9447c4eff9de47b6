"""The native runner restarts what exits, as compose's ``restart: unless-stopped``
does (devstack.runner.Supervisor, which ``make up`` runs natively): a killed instance
comes back while the rest keep serving, ``devstack restart NAME`` restarts one
gracefully, and an instance that keeps exiting is given up on, with a back-off
between its restarts, while the others stay up."""

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.accounts import register
from devstack.compose import NativeService
from devstack.runner import NativeStack, RestartPolicy, Supervisor, healthy, request_restart
from devstack.shop import ORDER_INSTANCES, Shop
from devstack.testing import wait_for


class Watching:
    """A Supervisor checking the stack from a thread of its own, as ``make up`` does."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.supervisor.check()
            self._stop.wait(0.1)

    def __enter__(self) -> "Watching":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


@pytest.fixture
def watched(shop: Shop, tmp_path: Path) -> Iterator[tuple[Watching, list[str], Path]]:
    said: list[str] = []
    state = tmp_path / "native-stack.json"
    shop.stack.native.write_state(state)
    with Watching(Supervisor(stack=shop.stack.native, say=said.append, state_file=state)) as watching:
        yield watching, said, state


def _checked(supervisor: Supervisor) -> bool:
    supervisor.check()
    return True


def _pid(shop: Shop, name: str) -> int | None:
    """The instance's process id; None for the moment the supervisor replaces it."""
    return next((r.process.pid for r in list(shop.stack.native.running) if r.service.name == name), None)


def test_a_killed_instance_is_started_again_while_the_gateway_keeps_answering(shop: Shop, watched):
    _, said, _ = watched
    account = register(shop.gateway)
    victim = ORDER_INSTANCES[0]
    before = _pid(shop, victim)
    shop.stack.native.kill(victim)  # SIGKILL, as a crash
    answered: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (f"{victim} is back" in said and answered.count(201) >= 5):
        answered.append(shop.place(account).status_code)  # the gateway keeps answering
    assert _pid(shop, victim) != before, said
    assert healthy(shop.stack.url(victim, 8002) + "/health")
    assert f"{victim} exited with code -9; starting it again" in said
    assert f"{victim} is back" in said
    # At most the calls in flight on the killed instance failed; the rest were placed.
    assert answered.count(201) >= len(answered) - 3, answered


def test_devstack_restart_restarts_one_instance_gracefully(shop: Shop, watched):
    _, said, state = watched
    victim = ORDER_INSTANCES[1]
    before = _pid(shop, victim)
    request_restart(state, victim, timeout=90)
    assert _pid(shop, victim) not in (before, None)
    assert healthy(shop.stack.url(victim, 8002) + "/health")
    # A drain ends with a clean exit, not a kill.
    assert f"{victim} exited with code 0; starting it again" in said
    assert httpx.get(shop.stack.url("gateway", 8080) + "/health", timeout=10).status_code == 200


def test_an_instance_that_keeps_exiting_is_given_up_on_and_the_rest_keep_running(tmp_path):
    def service(name: str, code: str) -> NativeService:
        return NativeService(
            name=name,
            command=[sys.executable, "-c", code],
            environment={},
            ports=[],
            depends_on=[],
            health_url=None,
            compose_environment={},
        )

    stack = NativeStack(
        services=[service("steady", "import time; time.sleep(600)"), service("crashing", "raise SystemExit(3)")],
        bin_dir=Path(sys.executable).parent,
        log_dir=tmp_path,
    )
    said: list[str] = []
    policy = RestartPolicy(first_delay=0.2, max_delay=0.8, give_up_after=4, stays_up_after=30)
    supervisor = Supervisor(stack=stack, say=said.append, policy=policy)
    stack.start()
    try:
        began = time.monotonic()
        wait_for(lambda: _checked(supervisor) and "crashing" in supervisor.given_up, timeout=30, what="giving up")
        took = time.monotonic() - began
        steady = next(r for r in stack.running if r.service.name == "steady")
        assert steady.process.poll() is None  # never touched
    finally:
        stack.stop()
    assert said == [
        "crashing exited with code 3; starting it again",
        "crashing is back",
        "crashing exited with code 3; starting it again in 0.2 s",
        "crashing is back",
        "crashing exited with code 3; starting it again in 0.4 s",
        "crashing is back",
        "crashing exited with code 3; starting it again in 0.8 s",
        "crashing is back",
        "gave up on crashing: it exited 5 times without staying up 30 s"
        " (the rest keep running; Ctrl-C stops everything)",
    ]
    assert took >= 0.2 + 0.4 + 0.8  # the back-off was waited out


def test_a_signal_other_than_kill_is_a_restart_too(tmp_path):
    stack = NativeStack(
        services=[
            NativeService(
                name="sleeper",
                command=[sys.executable, "-c", "import time; time.sleep(600)"],
                environment={},
                ports=[],
                depends_on=[],
                health_url=None,
                compose_environment={},
            )
        ],
        bin_dir=Path(sys.executable).parent,
        log_dir=tmp_path,
    )
    said: list[str] = []
    supervisor = Supervisor(stack=stack, say=said.append)
    stack.start()
    try:
        first = stack.running[0].process.pid
        stack.kill("sleeper", sig=signal.SIGTERM)
        wait_for(lambda: _checked(supervisor) and stack.running[0].process.pid != first, timeout=30, what="a restart")
        assert stack.running[0].process.poll() is None
    finally:
        stack.stop()
    assert said == ["sleeper exited with code -15; starting it again", "sleeper is back"]
