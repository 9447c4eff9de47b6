"""Fault tests: each module starts its own native stack (free ports, its own
databases, exchange, queues and SMTP sink) so that it may kill, stop and restart
processes, inject messages and restart brokers without disturbing anything else.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.shop import Shop, shop_on

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shop(infra, tmp_path_factory, request) -> Iterator[Shop]:
    """This module's own stack (the module's ``SHOP_ENV`` adds variables per service)."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with shop_on(
        root=ROOT,
        infra=infra,
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        purpose=f"fault_{name[:12]}",
        env_overrides=getattr(request.module, "SHOP_ENV", None),
    ) as shop:
        yield shop


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.fault)
