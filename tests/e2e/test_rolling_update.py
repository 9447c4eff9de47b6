"""A rolling update of every service on Docker Swarm (``make swarm-test``), the gateway
included, to a differently tagged image, under the steady traffic of the rolling
restart test (tests/fault/test_rolling_restart.py): orders at 20 a second or more, a
third without an Idempotency-Key, each read back, every fourth cancelled with If-Match,
event streams followed and WebSockets held open, all through the stack's edge.

Each service in turn gets the new image (``docker service update --image``), and
the stack's update_config rolls it: each new task starts and passes its health check
before an old one stops, one task at a time. (``docker stack deploy`` with a new
IMAGE_TAG rolls them all at once: on this machine's two cores the clients then fell
behind, 16 orders a second against 26.) No client request fails, every service ends
on the new image with its update completed, and afterwards no order, notification
or event is missing or doubled. A live connection whose instance went away ends the
way the services promise (a WebSocket closed with 1012, an event stream that resumes
from its last id) and does not count as a failure.

Runs last (tests/e2e/conftest.py orders it), and only against the swarm stack.
"""

import pytest

from devstack.swarmed import SERVICES, TAGS
from devstack.testing import wait_for
from devstack.traffic import SteadyTraffic

RATE = 26  # orders a second the clients aim at; the issue asks for 20 or more


def test_a_rolling_update_of_every_service_fails_no_request_and_loses_nothing(target, gateway, tmp_path):
    if target.swarm is None:
        pytest.skip(f"{target.kind} has no orchestrator to roll it to a new image: make swarm-test runs this")
    swarm = target.swarm
    assert set(swarm.images_running()) == set(SERVICES)
    try:
        roll_under_traffic(target=target, gateway=gateway)
    except AssertionError as e:
        # The stack is removed after the session: keep what each service logged.
        e.add_note(f"the services' logs: {swarm.save_logs(tmp_path / 'logs')}")
        raise


def roll_under_traffic(*, target, gateway) -> None:
    swarm = target.swarm
    with SteadyTraffic(gateway_url=target.gateway_url, gateway=gateway, rate=RATE, name="Rolled") as traffic:
        try:
            wait_for(lambda: traffic.orders() >= 2 * RATE, timeout=60, what="traffic before the update")
            started = traffic.mark()
            updates = swarm.roll(tag=TAGS[1])
            pace = traffic.pace_since(started)
        finally:
            traffic.stop()

        traffic.check_requests()
        assert updates == dict.fromkeys(SERVICES, "completed"), updates  # none paused or rolled back
        running = swarm.images_running()
        assert running == {service: {f"interchange/{service}:{TAGS[1]}"} for service in SERVICES}, running

        traffic.check_read_model()
        # Both notification tasks and both gateways were replaced: every event stream
        # ended once at least and resumed without a gap or a repeat; every WebSocket was
        # closed with 1012 once at least and opened again.
        traffic.check_streams(min_reconnects=1)
        traffic.check_sockets(min_restarts=1)
        pace.check(minimum=20)
