import pytest

from devstack.compose import NativeService
from devstack.errors import StackFailed
from devstack.runner import start_order


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
