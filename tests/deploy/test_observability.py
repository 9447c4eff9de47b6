"""The compose profile "observability" checked offline: the collector, Jaeger and
Grafana images cannot be pulled here, so what is checked is what can be without
them. promtool (Debian's prometheus package, `make tools`) checks the Prometheus
config and the alert rules, runs the rules' unit tests and parses every dashboard
query; the compose file keeps the profile optional, on loopback and without a
default password; Prometheus scrapes every instance compose runs.
devstack.observability lists the metrics the rules and the dashboard use (the
end-to-end suite checks each against the services' /metrics)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.compose import (
    AddressMap,
    application_services,
    default_ports,
    load_compose,
    native_services,
    read_env_file,
    secret_files,
)
from devstack.observability import (
    DASHBOARDS,
    OBSERVABILITY,
    RULES_FILE,
    dashboard_expressions,
    fill_grafana_variables,
    metric_names,
    metric_names_used,
    rule_expressions,
)
from devstack.secrets import GRAFANA_PASSWORD_FILE
from devstack.standins import images_named
from gateway.domain.routes import ROUTES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
CONFIG_DIR = ROOT / OBSERVABILITY
PROFILE = "observability"
PROFILED = {"otel-collector", "jaeger", "prometheus", "grafana"}
# Where each UI is published on this machine: the variable and its default.
UI_PORTS = {
    "jaeger": ("JAEGER_UI_HOST_PORT", 16686),
    "prometheus": ("PROMETHEUS_HOST_PORT", 9090),
    "grafana": ("GRAFANA_HOST_PORT", 3000),
}
TRACING = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def document():
    return load_compose(compose_file=COMPOSE, env_file=ENV_EXAMPLE, environ={})


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool (Debian's prometheus package; `make tools` installs it) is not installed")
    return found


def run_promtool(promtool: str, *arguments: str, cwd: Path = CONFIG_DIR) -> str:
    result = subprocess.run([promtool, *arguments], capture_output=True, text=True, cwd=cwd, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def load(name: str):
    return yaml.safe_load((CONFIG_DIR / name).read_text())


# --- promtool ---------------------------------------------------------------------


def test_the_alert_rules_pass_promtool_check_rules(promtool):
    output = run_promtool(promtool, "check", "rules", RULES_FILE.name)
    assert f"SUCCESS: {len(rule_expressions(root=ROOT))} rules found" in output


def test_the_alert_rules_unit_tests_pass(promtool):
    assert "SUCCESS" in run_promtool(promtool, "test", "rules", "rules.test.yml")


def test_every_alert_has_a_unit_test_that_makes_it_fire_and_one_that_keeps_it_quiet():
    cases = [case for test in load("rules.test.yml")["tests"] for case in test["alert_rule_test"]]
    for alert in rule_expressions(root=ROOT):
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert]
        assert True in outcomes, f"{alert} never fires in rules.test.yml"
        assert False in outcomes, f"{alert} is never shown to stay quiet in rules.test.yml"


def test_every_dashboard_query_parses(promtool, tmp_path):
    """Each query becomes a recording rule of a scratch rules file: `promtool check
    rules` parses every expression."""
    queries = dashboard_expressions(root=ROOT)
    assert len(queries) >= 30
    rules = [{"record": f"dashboard:query_{index}", "expr": query} for index, query in enumerate(queries.values())]
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool(promtool, "check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output


def test_promtool_refuses_a_query_that_does_not_parse(promtool, tmp_path):
    """The check above can fail: a dashboard query with a missing bracket is refused."""
    broken = {"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:broken", "expr": "sum(rate(x[1m])"}]}]}
    (tmp_path / "broken.rules.yml").write_text(yaml.safe_dump(broken))
    result = subprocess.run([promtool, "check", "rules", "broken.rules.yml"], capture_output=True, cwd=tmp_path)
    assert result.returncode != 0


def test_the_prometheus_config_passes_promtool_check_config(promtool):
    """Offline: the scrape targets are static host names, resolved only when scraped."""
    output = run_promtool(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: prometheus.yml is valid prometheus config file syntax" in output


# --- what Prometheus scrapes ------------------------------------------------------


def metrics_port(name: str, spec) -> int:
    """The gateway serves /metrics on its operations port; the others on their HTTP port."""
    environment = spec["environment"]
    return int(environment["OPS_PORT"] if "OPS_PORT" in environment else environment["HTTP_PORT"])


def test_prometheus_scrapes_every_instance_of_every_service_and_the_collector(raw):
    wanted = {
        # One job per program (two compose services running order-service are one job),
        # one target per instance, named after its compose service.
        (spec["command"][0], name, f"{name}:{metrics_port(name, spec)}")
        for name, spec in application_services(raw).items()
    }
    collector_port = load("otel-collector.yaml")["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    wanted.add(("otel-collector", "otel-collector", f"otel-collector:{collector_port['prometheus']['port']}"))
    scraped = {
        (job["job_name"], group["labels"]["instance"], target)
        for job in load("prometheus.yml")["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert scraped == wanted
    assert ("gateway", "gateway", "gateway:8081") in scraped
    assert ("order-service", "order-service-2", "order-service-2:8002") in scraped


def test_prometheus_loads_the_rules_it_is_mounted_with(raw):
    assert load("prometheus.yml")["rule_files"] == [RULES_FILE.name]
    mounts = raw["services"]["prometheus"]["volumes"]
    assert f"./{RULES_FILE}:/etc/prometheus/{RULES_FILE.name}:ro" in mounts
    assert f"./{OBSERVABILITY}/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


# --- traces -----------------------------------------------------------------------


def test_every_application_service_sends_its_spans_to_the_collector(document):
    for name, spec in application_services(document).items():
        environment = spec["environment"]
        assert {key: environment.get(key) for key in TRACING} == TRACING, name


def test_the_collector_takes_otlp_both_ways_and_hands_traces_to_jaeger():
    collector, jaeger = load("otel-collector.yaml"), load("jaeger.yaml")
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert (protocols["http"]["endpoint"], protocols["grpc"]["endpoint"]) == ("0.0.0.0:4318", "0.0.0.0:4317")
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    [exporter] = traces["exporters"]
    assert exporter.startswith("otlp_grpc/")
    jaeger_grpc = jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert collector["exporters"][exporter]["endpoint"] == f"jaeger:{jaeger_grpc.rsplit(':', 1)[1]}"
    assert jaeger["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]


# --- the compose file -------------------------------------------------------------


def test_the_observability_services_are_the_profile_and_nothing_else_is(raw):
    profiled = {name for name, spec in raw["services"].items() if "profiles" in spec}
    assert profiled == PROFILED
    for name in PROFILED:
        assert raw["services"][name]["profiles"] == [PROFILE], name


def test_the_observability_services_are_long_running_with_limits_and_pinned_images(raw):
    for name in PROFILED:
        spec = raw["services"][name]
        assert spec["restart"] == "unless-stopped", name
        assert spec["logging"]["driver"] == "json-file", name
        assert "mem_limit" in spec, name
        assert re.search(r":v?\d+\.\d+\.\d+$", spec["image"]), spec["image"]
        assert "test" in spec["healthcheck"], name


def test_the_uis_listen_on_loopback_only_on_ports_of_their_own_variable():
    text = COMPOSE.read_text()
    for name, (variable, default) in UI_PORTS.items():
        assert f'"127.0.0.1:${{{variable}:-{default}}}:{default}"' in text, name
    raw = yaml.safe_load(text)
    assert "ports" not in raw["services"]["otel-collector"]
    for name in PROFILED:
        for port in raw["services"][name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_no_application_service_waits_for_an_observability_service(raw):
    for name, spec in raw["services"].items():
        assert not set(spec.get("depends_on", {})) & PROFILED, name


def test_grafana_has_no_default_password_and_no_anonymous_access(raw):
    grafana = raw["services"]["grafana"]
    environment = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"
    secret = re.fullmatch(r"/run/secrets/(\w+)", environment["GF_SECURITY_ADMIN_PASSWORD__FILE"])
    assert secret
    assert secret[1] in grafana["secrets"]
    # A file `python -m devstack secrets` makes at random, never a value in a file here.
    assert raw["secrets"][secret[1]]["file"] == f"./{GRAFANA_PASSWORD_FILE}"
    assert "GRAFANA" not in ENV_EXAMPLE.read_text()


def test_grafana_is_given_both_data_sources_and_the_dashboards(raw):
    sources = {
        source["uid"]: source for source in load("grafana/provisioning/datasources/datasources.yml")["datasources"]
    }
    assert (sources["prometheus"]["type"], sources["prometheus"]["url"]) == ("prometheus", "http://prometheus:9090")
    assert (sources["jaeger"]["type"], sources["jaeger"]["url"]) == ("jaeger", "http://jaeger:16686")
    [provider] = load("grafana/provisioning/dashboards/dashboards.yml")["providers"]
    mounts = raw["services"]["grafana"]["volumes"]
    assert f"./{DASHBOARDS}:{provider['options']['path']}:ro" in mounts
    assert f"./{OBSERVABILITY}/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    home = raw["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / DASHBOARDS / Path(home).name).is_file()
    for path in (ROOT / DASHBOARDS).glob("*.json"):
        used = set(re.findall(r'"uid": "(\w+)"', path.read_text()))
        assert used - {json.loads(path.read_text())["uid"]} <= set(sources), path


def test_env_example_turns_the_profile_on():
    assert read_env_file(ENV_EXAMPLE)["COMPOSE_PROFILES"] == PROFILE


def test_the_native_runner_and_the_container_tests_leave_the_profile_out(document):
    addresses = AddressMap(
        infra_urls={name: f"scheme://{name}.local" for name in ("postgres", "redis", "rabbitmq")},
        ports=default_ports(document),
        secret_files=secret_files(document=document, root=ROOT),
    )
    native = {service.name for service in native_services(document=document, addresses=addresses)}
    assert native
    assert not native & PROFILED
    images = images_named(root=ROOT, compose_files=[COMPOSE])
    profiled_images = {document["services"][name]["image"] for name in PROFILED}
    assert not set(images) & profiled_images


# --- the metrics the rules and the dashboard use ----------------------------------


def test_the_metric_names_of_a_query_leave_out_functions_labels_and_keywords():
    expression = (
        'histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="a",x=~"b|c"}[5m]'
        " offset 1m))) / on (route) group_left (job) max without (instance) (q:ratio) > bool 1e3 unless up"
    )
    assert metric_names(expression) == {"http_request_duration_seconds", "q:ratio", "up"}
    assert metric_names('sum(rate(grpc_server_handled_total{grpc_code!="OK"}[1m]))') == {"grpc_server_handled_total"}


def test_grafana_variables_are_filled_in_and_unknown_ones_refused():
    assert fill_grafana_variables("rate(x[$__rate_interval]) + rate(y[${__interval}])") == "rate(x[1m]) + rate(y[1m])"
    with pytest.raises(Exception, match=r"\$instance"):
        fill_grafana_variables('x{instance="$instance"}')


def test_the_rules_and_the_dashboard_use_the_metrics_they_are_about():
    used = metric_names_used(root=ROOT)
    assert {
        "http_requests_total",
        "http_request_duration_seconds",
        "circuit_breaker_state",
        "upstream_retries_total",
        "outbox_backlog_messages",
        "outbox_lag_seconds",
        "eventstore_sequencer_lag_seconds",
        "projection_lag_seconds",
        "messaging_consumer_lag_seconds",
        "messaging_dead_letter_messages",
        "gateway_live_connections",
        "notification_live_connections",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "grpc_client_handling_seconds",
        "gateway_shed_requests_total",
    } <= used
    assert not any(name.endswith(("_bucket", "_sum", "_count")) for name in used)
    assert "up" not in used  # Prometheus's own, on no /metrics


def test_orders_per_second_counts_the_gateways_order_route():
    orders = next(query for key, query in dashboard_expressions(root=ROOT).items() if "Orders placed / s" in key)
    route = re.search(r'route="([^"]+)"', orders)
    assert route
    assert any(r.method == "POST" and r.path == route[1] and r.summary == "Place an order" for r in ROUTES)


# --- the docs ---------------------------------------------------------------------


def test_the_docs_explain_every_alert_and_every_ui():
    text = (ROOT / "docs" / "observability.md").read_text()
    for alert in rule_expressions(root=ROOT):
        assert f"`{alert}`" in text, alert
    for variable, default in UI_PORTS.values():
        assert variable in text
        assert f"http://127.0.0.1:{default}" in text
    assert re.search(r"^## Traces$", text, flags=re.M)
