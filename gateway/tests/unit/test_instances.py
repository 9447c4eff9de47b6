"""Round-robin over static instances, with refusing ones sent to the back for a while."""

import pytest

from gateway.adapters.instances import StaticInstances, parse_urls

A, B, C = "http://a:1", "http://b:1", "http://c:1"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_calls_take_turns():
    instances = StaticInstances(urls=[A, B, C], down_seconds=5)
    assert [instances.candidates() for _ in range(4)] == [[A, B, C], [B, C, A], [C, A, B], [A, B, C]]


def test_a_down_instance_goes_last_until_its_time_is_up():
    clock = Clock()
    instances = StaticInstances(urls=[A, B, C], down_seconds=5, clock=clock)
    instances.mark_down(url=A)
    assert [instances.candidates() for _ in range(3)] == [[B, C, A], [B, C, A], [C, B, A]]
    clock.now += 5.01
    assert instances.candidates() == [A, B, C]


def test_with_every_instance_down_they_are_still_tried_oldest_failure_first():
    clock = Clock()
    instances = StaticInstances(urls=[A, B], down_seconds=5, clock=clock)
    instances.mark_down(url=B)
    clock.now += 1
    instances.mark_down(url=A)
    assert instances.candidates() == [B, A]


def test_one_instance_is_always_the_candidate():
    instances = StaticInstances(urls=[A + "/"], down_seconds=5)
    instances.mark_down(url=A)
    assert instances.candidates() == [A]


def test_an_unknown_url_is_not_marked():
    instances = StaticInstances(urls=[A], down_seconds=5)
    instances.mark_down(url=B)
    assert instances.candidates() == [A]


def test_no_instance_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        StaticInstances(urls=[], down_seconds=5)


@pytest.mark.parametrize(
    ("value", "urls"),
    [
        ("http://one:8003", ["http://one:8003"]),
        ("http://one:8003/, http://two:8003", ["http://one:8003", "http://two:8003"]),
        (" http://one:8003 ,,", ["http://one:8003"]),
        ("", []),
    ],
)
def test_a_setting_lists_urls_separated_by_commas(value, urls):
    assert parse_urls(value) == urls
