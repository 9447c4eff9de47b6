"""Every metric the dashboard and the alert rules name is one the services export
(docs/observability.md): a renamed or missing metric would leave a panel empty and
an alert silent without any error. Read from every service's /metrics after the
suite's traffic so far (the gateway's on its operations port)."""

import re
from pathlib import Path

import httpx

from devstack.observability import metric_names_used

ROOT = Path(__file__).resolve().parents[2]
# Each service's /metrics: (compose service, container port).
METRICS = (
    ("gateway", 8081),
    ("user-service", 8001),
    ("event-store", 8004),
    ("order-service", 8002),
    ("notification-service", 8003),
)
_DECLARED = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{| )", re.MULTILINE)


def exported(text: str) -> set[str]:
    """The names a /metrics page declares (a labelled metric shows its TYPE line
    before its first use) and the names of its samples."""
    names = {name for name, _ in _DECLARED.findall(text)} | set(_SAMPLE.findall(text))
    # prometheus_client declares a counter without its _total; samples carry it.
    names |= {f"{name}_total" for name, kind in _DECLARED.findall(text) if kind == "counter"}
    return names


def test_every_metric_the_dashboard_and_the_rules_name_is_exported(target):
    target.need("ports")
    assert target.ports is not None
    found: set[str] = set()
    for service, port in METRICS:
        page = httpx.get(f"{target.ports.url(service, port)}/metrics", timeout=10)
        assert page.status_code == 200, (service, page.status_code)
        found |= exported(page.text)
    used = metric_names_used(root=ROOT)
    assert len(used) > 20  # the queries were read, not an empty list
    assert sorted(used - found) == []
