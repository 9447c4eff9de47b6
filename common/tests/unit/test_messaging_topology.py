"""The pure parts of messaging: attempts read from headers, and the topology as data."""

import pytest

from interchange_common.messaging import ConsumerTopology, _attempt_of, consumer_topology, retry_queue_moves
from interchange_common.queue_migration import Move


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [
        ({}, 1),
        ({"x-attempt": 0}, 1),
        ({"x-attempt": 2}, 3),
        ({"x-attempt": -1}, 1),
        ({"x-attempt": -4}, 1),
        ({"x-attempt": True}, 1),
        ({"x-attempt": "3"}, 1),
        ({"x-attempt": 2.5}, 1),
    ],
)
def test_an_attempt_count_from_a_header_is_never_below_one(headers, attempt):
    assert _attempt_of(headers) == attempt


def test_a_consumer_gets_a_queue_a_retry_queue_per_delay_and_a_dead_letter_queue():
    topology = consumer_topology(ConsumerTopology(exchange="ex", queue="q", bindings=("a.#",), retry_delays=(1, 5)))
    assert [q.name for q in topology.queues] == ["ex.unrouted", "q", "q.retry.1.quorum", "q.retry.2.quorum", "q.dead"]
    retry = next(q for q in topology.queues if q.name == "q.retry.1.quorum")
    assert retry.arguments == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "q",
        # The hop back to the queue holds until the queue has the message.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": 20,
    }
    # Neither dead-letters anything: classic, no arguments.
    assert {q.name: q.arguments for q in topology.queues if q.name in ("q", "q.dead")} == {"q": {}, "q.dead": {}}
    assert [(b.exchange, b.queue, b.routing_key) for b in topology.bindings] == [
        ("ex.unrouted", "ex.unrouted", ""),
        ("ex", "q", "a.#"),
    ]
    definitions = topology.definitions()
    assert {e["name"]: e["arguments"] for e in definitions["exchanges"]} == {
        "ex.unrouted": {},
        "ex": {"alternate-exchange": "ex.unrouted"},
    }


def test_the_classic_retry_queues_of_before_are_emptied_into_their_quorum_successors():
    topology = ConsumerTopology(exchange="ex", queue="q", bindings=("a.#",), retry_delays=(1, 5))
    assert retry_queue_moves(topology) == (
        Move(source="q.retry.1", target="q.retry.1.quorum"),
        Move(source="q.retry.2", target="q.retry.2.quorum"),
    )
