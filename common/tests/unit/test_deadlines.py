"""Deadlines: parsed from the header, nested, and the time left for an outgoing call."""

import pytest

from interchange_common.deadlines import (
    MAX_TIMEOUT_SECONDS,
    DeadlineExceeded,
    deadline_in,
    header_value,
    parse_timeout,
    remaining,
    time_left,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1500", 1.5), ("0", 0.0), (None, None), ("", None), ("-5", None), ("1.5", None), ("9" * 12, None)],
)
def test_header_values(value, seconds):
    assert parse_timeout(value) == seconds


def test_a_huge_timeout_is_capped():
    assert parse_timeout("999999999") == MAX_TIMEOUT_SECONDS


def test_without_a_deadline_a_call_keeps_its_own_timeout():
    assert time_left() is None
    assert remaining(at_most=2.0) == 2.0


def test_an_inner_deadline_never_extends_an_outer_one():
    with deadline_in(0.5):
        with deadline_in(60):
            assert remaining(at_most=5.0) <= 0.5
        with deadline_in(0.1):
            assert remaining(at_most=5.0) <= 0.1
    assert time_left() is None


def test_a_passed_deadline_refuses_the_call():
    with deadline_in(0), pytest.raises(DeadlineExceeded):
        remaining(at_most=1.0)


def test_the_header_value_is_whole_milliseconds_at_least_one():
    assert header_value(timeout=1.2345) == "1234"
    assert header_value(timeout=0.0001) == "1"
