"""The images a user runs (make compose-test only): a non-root user, and nothing that
built them or reloads them in development."""

import pytest

SERVICES = ("user-service", "event-store", "order-service", "notification-service", "gateway")


def importable(target, service: str, module: str) -> bool:
    ran = target.in_image(service, "python", "-c", f"import {module}")
    assert ran.returncode in (0, 1), ran.stderr
    return ran.returncode == 0


@pytest.mark.parametrize("service", SERVICES)
def test_an_image_runs_as_its_own_user_without_build_or_reload_tools(target, service):
    target.need("in_image")
    who = target.in_image(service, "id", "-u")
    assert who.stdout.strip() == "10001", who.stderr
    assert importable(target, service, "uvicorn" if service != "gateway" else "hypercorn")
    for tool in ("pip", "setuptools", "watchfiles"):
        assert not importable(target, service, tool), (service, tool)


def test_the_gateway_image_has_no_grpc(target):
    target.need("in_image")
    assert not importable(target, "gateway", "grpc")
    assert importable(target, "order-service", "grpc")
