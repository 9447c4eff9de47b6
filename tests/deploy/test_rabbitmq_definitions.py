"""infra/rabbitmq/definitions.json is what the services declare, from one source.

Every service declares its exchanges and queues at start-up through
interchange_common.messaging's Topology; compose also loads definitions.json into
the broker before any service starts, for operators to read and review. This test
keeps the two the same. After a topology change, regenerate the file with

    .venv/bin/python tests/deploy/test_rabbitmq_definitions.py
"""

import json
from pathlib import Path
from typing import Any

from devstack.compose import load_compose
from gateway.bootstrap import revocation_topology
from interchange_common.messaging import Topology, consumer_topology, exchange_topology
from notification_service.bootstrap import topology_of
from notification_service.config import Settings as NotificationSettings

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = ROOT / "infra" / "rabbitmq" / "definitions.json"


def expected() -> dict[str, Any]:
    """The topology of the compose deployment, from the services' own code and settings."""
    compose = load_compose(compose_file=ROOT / "docker-compose.yml", env_file=ROOT / ".env.example", environ={})
    notifications = compose["services"]["notification-service"]["environment"]
    settings = NotificationSettings.model_validate({key.lower(): value for key, value in notifications.items()})
    gateway = compose["services"]["gateway"]["environment"]
    exchanges = {
        spec["environment"]["EVENTS_EXCHANGE"]
        for spec in compose["services"].values()
        if "EVENTS_EXCHANGE" in spec.get("environment", {})
    }
    topology = Topology()
    for exchange in sorted(exchanges):
        topology += exchange_topology(exchange)
    topology += consumer_topology(topology_of(settings))
    revocations = revocation_topology(exchange=gateway["EVENTS_EXCHANGE"], queue=gateway["EVENTS_QUEUE"])
    return (topology + consumer_topology(revocations)).definitions()


def test_the_definitions_file_is_what_the_services_declare():
    assert json.loads(DEFINITIONS.read_text()) == expected(), (
        "infra/rabbitmq/definitions.json is stale: run .venv/bin/python tests/deploy/test_rabbitmq_definitions.py"
    )


def test_the_deployment_has_one_events_exchange_with_a_dead_letter_path():
    definitions = expected()
    assert [e["name"] for e in definitions["exchanges"] if e["type"] == "topic"] == ["interchange.events"]
    queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
    assert "notification-service.dead" in queues
    retry = queues["notification-service.retry.1.quorum"]
    assert retry["x-dead-letter-routing-key"] == "notification-service"
    # The import makes it a quorum queue only if the file says so; and the hop back holds
    # the message until the queue has it.
    assert (retry["x-queue-type"], retry["x-dead-letter-strategy"]) == ("quorum", "at-least-once")
    assert "gateway.dead" in queues  # the gateway's revocations have a dead-letter path too
    assert queues["gateway.retry.1.quorum"]["x-queue-type"] == "quorum"


if __name__ == "__main__":
    DEFINITIONS.write_text(json.dumps(expected(), indent=2) + "\n")
