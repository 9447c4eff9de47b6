"""The observability profile's queries, read from the repository: every PromQL
expression of the alert rules (infra/observability/rules.yml) and of the Grafana
dashboards (infra/observability/grafana/dashboards/*.json), and the metric names
they select.

The collector, Jaeger and Grafana cannot run where the tests run, so what the tests
can check is that these queries parse (promtool, in tests/deploy) and that every
metric they name is one the services really export (an end-to-end run's /metrics).

    rule_expressions(root=)       each rule's expr
    dashboard_expressions(root=)  each Prometheus target's expr, Grafana's $__ variables filled in
    metric_names(expression)      the metrics one expression selects (histograms by their base name)
    metric_names_used(root=)      all of them, less what Prometheus makes itself (up)
"""

import json
import re
from pathlib import Path
from typing import Any

import yaml

from devstack.errors import DevstackError

OBSERVABILITY = Path("infra/observability")
RULES_FILE = OBSERVABILITY / "rules.yml"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
# Series Prometheus writes for each scrape, not read from any /metrics.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"})
# What a dashboard query is given in place of Grafana's interval variables.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

_GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
    | {"inf", "nan", "start", "end"}
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def rule_expressions(*, root: Path) -> dict[str, str]:
    """Each alert or recording rule's name → its expression."""
    document = yaml.safe_load((root / RULES_FILE).read_text())
    return {
        str(rule.get("alert") or rule["record"]): str(rule["expr"])
        for group in document["groups"]
        for rule in group["rules"]
    }


def _panels(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found: list[dict[str, Any]] = []
    for panel in node.get("panels", []):
        found.append(panel)
        found += _panels(panel)
    return found


def fill_grafana_variables(expression: str) -> str:
    """Grafana's interval variables replaced by durations, as Grafana would before
    sending the query; any other variable is refused (give it a value here first)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_INTERVALS:
            raise DevstackError(f"no test value for the dashboard variable ${name} in {expression!r}")
        return GRAFANA_INTERVALS[name]

    return _GRAFANA_VARIABLE.sub(substitute, expression)


def dashboard_expressions(*, root: Path) -> dict[str, str]:
    """``file: panel title [refId]`` → that Prometheus query, its variables filled in."""
    found: dict[str, str] = {}
    for path in sorted((root / DASHBOARDS).glob("*.json")):
        for panel in _panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                if source.get("type") != "prometheus" or not target.get("expr"):
                    continue
                key = f"{path.name}: {panel.get('title', '?')} [{target.get('refId', '?')}]"
                found[key] = fill_grafana_variables(str(target["expr"]))
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects, ``_bucket``/``_sum``/``_count``
    dropped (a histogram is looked for by its base name): strings, label matchers,
    ranges and grouping label lists removed, what is left that is no function,
    keyword or number is a metric."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for name in _IDENTIFIER.findall(text):
        if name.lower() in _KEYWORDS:
            continue
        names.add(next((name.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), name))
    return names


def metric_names_used(*, root: Path) -> frozenset[str]:
    """Every metric the alert rules and the dashboards name that a service must
    export (Prometheus's own per-scrape series left out)."""
    expressions = [*rule_expressions(root=root).values(), *dashboard_expressions(root=root).values()]
    return frozenset(name for expression in expressions for name in metric_names(expression)) - SYNTHETIC
