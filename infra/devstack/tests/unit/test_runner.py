import json
import subprocess
import sys

import pytest

from devstack.compose import NativeService
from devstack.errors import StackFailed
from devstack.runner import NativeStack, start_order, stop_from_state


def service(name, *depends_on):
    return NativeService(name, ["true"], {}, [], list(depends_on), None, {})


def test_dependencies_start_first():
    order = [
        s.name
        for s in start_order([service("gateway", "users", "orders"), service("orders", "users"), service("users")])
    ]
    assert order == ["users", "orders", "gateway"]


def test_a_cycle_is_refused():
    with pytest.raises(StackFailed, match="cycle"):
        start_order([service("a", "b"), service("b", "a")])


def sleeper(name, *, health_url=None, seconds=60):
    command = [sys.executable, "-c", f"import time; time.sleep({seconds})"]
    return NativeService(name, command, {}, [], [], health_url, {})


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stop_ends_every_process(tmp_path):
    stack = NativeStack(services=[sleeper("a"), sleeper("b")], bin_dir=tmp_path, log_dir=tmp_path)
    stack.start(health_timeout=5)
    processes = [running.process for running in stack.running]
    assert all(process.poll() is None for process in processes)
    stack.stop(grace_seconds=5)
    assert all(process.poll() is not None for process in processes)


def test_down_stops_services_whose_runner_is_gone(tmp_path):
    stack = NativeStack(services=[sleeper("a")], bin_dir=tmp_path)
    stack.start(health_timeout=5)
    process = stack.running[0].process
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"runner": dead_pid(), "services": {"a": process.pid}}))
    assert stop_from_state(state, grace_seconds=5) == ["a"]
    assert process.wait(timeout=5) is not None
    assert not state.exists()


def test_a_service_that_exits_while_starting_fails_the_start(tmp_path):
    broken = NativeService(
        "broken", [sys.executable, "-c", "raise SystemExit(3)"], {}, [], [], "http://127.0.0.1:9/", {}
    )
    stack = NativeStack(services=[broken], bin_dir=tmp_path, log_dir=tmp_path)
    with pytest.raises(StackFailed, match="broken exited with code 3"):
        stack.start(health_timeout=10)
    assert stack.running == []


def test_a_service_that_never_gets_healthy_fails_the_start_and_is_stopped(tmp_path):
    stack = NativeStack(services=[sleeper("mute", health_url="http://127.0.0.1:9/")], bin_dir=tmp_path)
    with pytest.raises(StackFailed, match="not healthy"):
        stack.start(health_timeout=0.5)
    assert stack.running == []
