"""What a native ``devstack up`` prints: progress while starting, the services' lines
readable and prefixed on a terminal, and exactly as written otherwise."""

import io
import json
import sys

import pytest

from devstack import runner
from devstack.compose import NativeService
from devstack.console import ServiceOutput, choose_log_format, pretty_line, progress_message, wants_colour
from devstack.errors import DevstackError
from devstack.runner import NativeStack, StartProgress
from devstack.testing import wait_for

LINE = json.dumps(
    {
        "level": "INFO",
        "logger": "order_service.api",
        "message": "order placed",
        "service": "order-service",
        "request_id": "req-1",
        "time": "2025-03-04T12:34:56.789012+00:00",
        "order_id": "o-7",
        "total": 12.5,
        "note": "two words",
    }
)


def service(name, *depends_on, health_url="http://127.0.0.1:8001/health"):
    return NativeService(
        name, [sys.executable, "-c", "import time; time.sleep(60)"], {}, [], list(depends_on), health_url, {}
    )


def test_a_json_line_becomes_one_readable_line():
    assert pretty_line(LINE, colour=False) == (
        "12:34:56.789 INFO    order placed"
        ' request_id=req-1 logger=order_service.api order_id=o-7 total=12.5 note="two words"'
    )


def test_fields_that_would_break_the_line_are_escaped_and_nulls_left_out():
    line = json.dumps({"level": "ERROR", "message": "boom\nagain", "request_id": None, "exc_info": "Traceback\n  x"})
    assert pretty_line(line, colour=False) == 'ERROR   boom\\nagain exc_info="Traceback\\n  x"'


@pytest.mark.parametrize("line", ["Traceback (most recent call last):", "", "42", '["a"]', "{not json"])
def test_what_is_not_a_json_object_passes_through(line):
    assert pretty_line(line, colour=False) == line


def test_colours_only_when_asked():
    assert "\x1b[" not in pretty_line(LINE, colour=False)
    coloured = pretty_line(json.dumps({"level": "ERROR", "message": "down"}), colour=True)
    assert coloured == "\x1b[1;31mERROR  \x1b[0m down"


def test_each_instance_has_its_colour_and_a_prefix_padded_to_the_longest_name():
    stream = io.StringIO()
    output = ServiceOutput(names=["gateway", "order-service-2"], stream=stream, log_format="pretty", colour=True)
    output("gateway", b"plain text\n")
    output("order-service-2", b"plain text\n")
    first, second = stream.getvalue().splitlines()
    assert first == "\x1b[36mgateway         |\x1b[0m plain text"
    assert second == "\x1b[33morder-service-2 |\x1b[0m plain text"


def test_without_colour_the_prefix_is_plain():
    output = ServiceOutput(names=["gateway", "user-service-1"], stream=io.StringIO(), log_format="pretty", colour=False)
    assert output.shown("gateway", (LINE + "\n").encode()) == "gateway        | " + pretty_line(LINE, colour=False)


def test_json_lines_stay_exactly_as_written_without_a_prefix():
    stream = io.StringIO()
    output = ServiceOutput(names=["gateway"], stream=stream, log_format="json", colour=True)
    output("gateway", (LINE + "\n").encode())
    output("gateway", b"no newline at the end")
    assert stream.getvalue() == LINE + "\nno newline at the end\n"


@pytest.mark.parametrize(
    ("environ", "isatty", "expected"),
    [
        ({}, True, "pretty"),
        ({}, False, "json"),
        ({"DEVSTACK_LOG_FORMAT": "json"}, True, "json"),
        ({"DEVSTACK_LOG_FORMAT": "Pretty"}, False, "pretty"),
        ({"DEVSTACK_LOG_FORMAT": ""}, True, "pretty"),
    ],
)
def test_the_log_format_follows_the_terminal_unless_asked(environ, isatty, expected):
    assert choose_log_format(environ=environ, isatty=isatty) == expected


def test_an_unknown_log_format_is_refused():
    with pytest.raises(DevstackError, match="json or pretty"):
        choose_log_format(environ={"DEVSTACK_LOG_FORMAT": "yaml"}, isatty=True)


@pytest.mark.parametrize(
    ("environ", "isatty", "expected"),
    [({}, True, True), ({}, False, False), ({"NO_COLOR": "1"}, True, False), ({"NO_COLOR": ""}, True, True)],
)
def test_no_color_turns_colours_off(environ, isatty, expected):
    assert wants_colour(environ=environ, isatty=isatty) is expected


def test_progress_messages():
    user = service("user-service")
    order = service("order-service-2", "event-store", "user-service", health_url="http://127.0.0.1:8003/health")
    assert progress_message(StartProgress(service=user, state="starting", elapsed=0.0)) == (
        "user-service: starting; waiting for http://127.0.0.1:8001/health"
    )
    assert progress_message(StartProgress(service=order, state="starting", elapsed=0.0)) == (
        "order-service-2: starting after event-store, user-service; waiting for http://127.0.0.1:8003/health"
    )
    assert progress_message(StartProgress(service=user, state="waiting", elapsed=5.2)) == (
        "user-service: waiting for http://127.0.0.1:8001/health (5 s)"
    )
    assert (
        progress_message(StartProgress(service=user, state="healthy", elapsed=1.26)) == "user-service: healthy (1.3 s)"
    )
    mute = service("worker", health_url=None)
    assert progress_message(StartProgress(service=mute, state="starting", elapsed=0.0)) == "worker: starting"
    assert progress_message(StartProgress(service=mute, state="started", elapsed=0.0)) == (
        "worker: started (no health check to wait for)"
    )


class FakeTime:
    """The runner's clock: sleeping moves it on at once."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_start_reports_each_state_change_and_a_reminder_every_five_seconds(tmp_path, monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(runner, "time", clock)
    monkeypatch.setattr(runner, "healthy", lambda url: clock.now >= 1013.0)
    steps: list[StartProgress] = []
    stack = NativeStack(services=[service("user-service")], bin_dir=tmp_path, log_dir=tmp_path)
    try:
        stack.start(health_timeout=60, progress=steps.append)
    finally:
        stack.stop(grace_seconds=5)
    assert [step.state for step in steps] == ["starting", "waiting", "waiting", "healthy"]
    assert [round(step.elapsed) for step in steps] == [0, 5, 10, 13]


def test_a_service_without_a_health_check_is_reported_started(tmp_path):
    steps: list[StartProgress] = []
    stack = NativeStack(services=[service("worker", health_url=None)], bin_dir=tmp_path, log_dir=tmp_path)
    try:
        stack.start(health_timeout=5, progress=steps.append)
    finally:
        stack.stop(grace_seconds=5)
    assert [step.state for step in steps] == ["starting", "started"]


def talker(name):
    code = "import sys, time; print('to stdout'); print('to stderr', file=sys.stderr); time.sleep(60)"
    return NativeService(name, [sys.executable, "-c", code], {}, [], [], None, {})


def test_output_hears_every_line_by_instance(tmp_path):
    heard = []
    stack = NativeStack(
        services=[talker("a-1")], bin_dir=tmp_path, output=lambda name, line: heard.append((name, line))
    )
    try:
        stack.start(health_timeout=5)
        wait_for(lambda: len(heard) == 2, timeout=10, what="both lines")
    finally:
        stack.stop(grace_seconds=5)
    assert sorted(heard) == [("a-1", b"to stderr\n"), ("a-1", b"to stdout\n")]


def test_a_log_dir_keeps_the_lines_in_its_file(tmp_path):
    heard = []
    stack = NativeStack(
        services=[talker("a-1")], bin_dir=tmp_path, log_dir=tmp_path, output=lambda name, line: heard.append(line)
    )
    try:
        stack.start(health_timeout=5)
        wait_for(lambda: (tmp_path / "a-1.log").read_text().count("\n") == 2, timeout=10, what="both lines")
    finally:
        stack.stop(grace_seconds=5)
    assert heard == []
