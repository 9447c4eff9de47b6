"""One JSON object per line, with the service, the request id and the event's fields."""

import logging

import orjson
import pytest

from interchange_common.logging import configure_logging
from interchange_common.requestctx import request_id_var


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_line_is_one_json_object_with_the_service_the_request_id_and_the_fields(capsys, restore_root_logger):
    configure_logging(service="order-service", level="info")
    token = request_id_var.set("r-123")
    try:
        logging.getLogger("interchange.access").info("request", extra={"status": 201, "path": "/api/orders"})
    finally:
        request_id_var.reset(token)
    logging.getLogger("interchange.access").debug("not at info")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    line = orjson.loads(lines[0])
    assert {key: line[key] for key in ("level", "logger", "message", "service", "request_id", "status", "path")} == {
        "level": "INFO",
        "logger": "interchange.access",
        "message": "request",
        "service": "order-service",
        "request_id": "r-123",
        "status": 201,
        "path": "/api/orders",
    }
    assert line["time"].startswith("20")


def test_characters_that_line_readers_take_for_breaks_stay_inside_one_line(capsys, restore_root_logger):
    configure_logging(service="gateway", level="info")
    path = "/api/a\u2028b\u2029c\x85d\nzè"
    logging.getLogger("interchange.access").info("request", extra={"path": path})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert orjson.loads(lines[0])["path"] == path
