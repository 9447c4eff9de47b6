"""What a native ``devstack up`` prints: its progress while starting, and the services' lines.

Services log one JSON object per line (interchange_common.logging). On a terminal
(``pretty``) each line is shown as compose shows a container's: behind its instance's
name, padded to the longest and in that instance's colour, and made readable (time as
the service wrote it, level, message, then request_id and the other fields as
key=value), still one line. Otherwise (``json``) each line is passed on exactly as the
service wrote it and without a prefix, so that every line stays valid JSON (its
``service`` field names the service). ``DEVSTACK_LOG_FORMAT=json|pretty`` chooses;
``NO_COLOR`` (set and not empty) turns colours off. Lines that are not JSON (a
traceback on stderr) pass through unchanged.
"""

import json
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, TextIO

from devstack.errors import DevstackError
from devstack.runner import StartProgress

LOG_FORMAT_VARIABLE = "DEVSTACK_LOG_FORMAT"
LogFormat = Literal["pretty", "json"]

# Compose's order: cyan, yellow, green, magenta, blue, then their bright variants.
_INSTANCE_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")
_LEVEL_COLOURS = {"DEBUG": "2", "WARNING": "33", "ERROR": "1;31", "CRITICAL": "1;31"}
_LEVEL_WIDTH = len("WARNING")
_RESET = "\x1b[0m"
# Whatever would break the line or drive the terminal, shown escaped instead.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PLAIN_VALUE = re.compile(r"[^\s\"'=\\]+")
# Shown first (time, level, message) or left out (the prefix names the instance).
_NOT_A_FIELD = frozenset({"time", "level", "message", "service", "request_id"})


def choose_log_format(*, environ: Mapping[str, str], isatty: bool) -> LogFormat:
    """DEVSTACK_LOG_FORMAT when set, else pretty on a terminal and JSON elsewhere."""
    wanted = environ.get(LOG_FORMAT_VARIABLE, "").strip().lower()
    if not wanted:
        return "pretty" if isatty else "json"
    if wanted == "pretty":
        return "pretty"
    if wanted == "json":
        return "json"
    raise DevstackError(f"{LOG_FORMAT_VARIABLE} is json or pretty, not {wanted!r}")


def wants_colour(*, environ: Mapping[str, str], isatty: bool) -> bool:
    """Colours on a terminal unless NO_COLOR is set (https://no-color.org)."""
    return isatty and not environ.get("NO_COLOR")


def _paint(text: str, code: str | None, *, colour: bool) -> str:
    return f"\x1b[{code}m{text}{_RESET}" if colour and code else text


def _escaped(text: str) -> str:
    return _UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def _shown_value(value: Any) -> str:
    if isinstance(value, str):
        return value if _PLAIN_VALUE.fullmatch(value) else _escaped(json.dumps(value, ensure_ascii=False))
    return _escaped(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _clock_time(value: Any) -> str:
    """HH:MM:SS.mmm of an ISO timestamp, in the zone the service wrote (UTC)."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _escaped(value)
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def pretty_line(line: str, *, colour: bool) -> str:
    """One JSON log line made readable, still one line; anything else unchanged."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    level = str(record.get("level") or "")
    fields = {"request_id": record.get("request_id")} | {
        key: value for key, value in record.items() if key not in _NOT_A_FIELD
    }
    pairs = [f"{key}={_shown_value(value)}" for key, value in fields.items() if value is not None]
    message = record.get("message")
    parts = [
        _clock_time(record.get("time")),
        _paint(f"{level:<{_LEVEL_WIDTH}}", _LEVEL_COLOURS.get(level), colour=colour) if level else "",
        "" if message is None else _escaped(str(message)),
        _paint(" ".join(pairs), "2", colour=colour) if pairs else "",
    ]
    return " ".join(part for part in parts if part)


class ServiceOutput:
    """The runner's ``output`` hook for ``devstack up``: each line an instance writes,
    whole (one write under a lock, so lines of different instances never mix)."""

    def __init__(self, *, names: Iterable[str], stream: TextIO, log_format: LogFormat, colour: bool) -> None:
        self._stream = stream
        self._log_format = log_format
        self._colour = colour
        self._colours: dict[str, str] = {}
        for name in names:
            self._colour_of(name)
        self._width = max((len(name) for name in self._colours), default=0)
        self._lock = threading.Lock()

    def _colour_of(self, name: str) -> str:
        if name not in self._colours:
            self._colours[name] = _INSTANCE_COLOURS[len(self._colours) % len(_INSTANCE_COLOURS)]
        return self._colours[name]

    def shown(self, name: str, raw: bytes) -> str:
        """The line as printed, without its newline."""
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if self._log_format == "json":
            return text
        prefix = _paint(f"{name:<{self._width}} |", self._colour_of(name), colour=self._colour)
        return f"{prefix} {pretty_line(text, colour=self._colour)}"

    def __call__(self, name: str, raw: bytes) -> None:
        line = self.shown(name, raw) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def progress_message(step: StartProgress) -> str:
    """What ``devstack up`` says about one step of starting an instance."""
    service = step.service
    if step.state == "starting":
        after = f" after {', '.join(service.depends_on)}" if service.depends_on else ""
        waiting = f"; waiting for {service.health_url}" if service.health_url else ""
        return f"{service.name}: starting{after}{waiting}"
    if step.state == "waiting":
        return f"{service.name}: waiting for {service.health_url} ({step.elapsed:.0f} s)"
    if step.state == "healthy":
        return f"{service.name}: healthy ({step.elapsed:.1f} s)"
    return f"{service.name}: started (no health check to wait for)"
