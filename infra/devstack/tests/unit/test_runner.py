import json
import os
import subprocess
import sys
import textwrap

import pytest

from devstack.compose import NativeService
from devstack.errors import StackFailed
from devstack.runner import NativeStack, start_order, stop_from_state
from devstack.testing import wait_for


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


def test_services_see_only_their_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DEVELOPER_SECRET", "from-the-shell")
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    service = NativeService("env", [sys.executable, "-c", code], {"GIVEN": "yes"}, [], [], None, {})
    stack = NativeStack(services=[service], bin_dir=tmp_path)
    stack.start(health_timeout=5)
    stack.running[0].process.wait(timeout=10)
    stack.stop()
    seen = json.loads(out.read_text())
    assert seen["GIVEN"] == "yes"
    assert "DEVELOPER_SECRET" not in seen
    assert str(tmp_path) in seen["PATH"]


def test_services_die_with_a_runner_that_is_killed(tmp_path):
    pid_file = tmp_path / "service.pid"
    runner = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from devstack.compose import NativeService
        from devstack.runner import NativeStack
        code = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
        stack = NativeStack(services=[NativeService("s", [sys.executable, "-c", code], {{}}, [], [], None, {{}})],
                            bin_dir=Path({str(tmp_path)!r}))
        stack.start(health_timeout=5)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", runner])
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=10, what="the service to start")
    service_pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()

    def gone():
        try:
            os.kill(service_pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert wait_for(gone, timeout=10, what="the orphaned service to end")
