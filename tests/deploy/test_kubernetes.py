"""The Kubernetes manifests (deploy/kubernetes), checked offline: every overlay builds
with kubectl's kustomize, every object validates against Kubernetes 1.32's schemas
(strict: an unknown field fails), the NetworkPolicies allow exactly the calls that
docker-compose.yml's services make, and the workloads keep compose's commands, ports,
probes, drain and replica counts. Nothing here runs on a cluster."""

import base64
import functools
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from devstack.compose import application_services, load_compose, network_aliases

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("development", "production")
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "interchange"
# The longest a service takes to stop after SIGTERM (see test_compose.py): the drain,
# then the HTTP server's and gRPC's graceful shutdowns.
SLOWEST_STOP_SECONDS = 19
# What the development overlay reads from its git-ignored secrets/ (make setup's
# .secrets/ files, copied there by hand); the build gets placeholders.
DEVELOPMENT_SECRET_FILES = ("jwt-private.pem", "tls-cert.pem", "tls-key.pem")
# The Secret the production Ingress names for its public host; the operators' too.
PUBLIC_TLS_SECRET = "interchange-tls"
# Not scaled by a HorizontalPodAutoscaler: the event-store, whose sequencer and relay
# are elected by advisory locks (more pods add no capacity to either).
STATEFUL = frozenset({"event-store"})
URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s,]+")

EXTERNAL = "(outside: an external dependency)"
DNS = "kube-dns"
INGRESS_CONTROLLER = "ingress-controller"
STRANGER = "(another pod in the namespace)"
OUTSIDER = "(a pod of another namespace)"
ANY_PORT = 0
# Where "outside the cluster" is, for ipBlock peers (TEST-NET-3).
OUTSIDE_ADDRESS = ipaddress.ip_address("203.0.113.7")


# --- Building and validating ------------------------------------------------------


@functools.cache
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the Kubernetes overlays cannot be built here")
    result = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    version = str(json.loads(result.stdout).get("kustomizeVersion", "")) if result.returncode == 0 else ""
    major = re.match(r"v?(\d+)\.", version)
    if major is None or int(major.group(1)) < 4:
        pytest.skip(f"kubectl's kustomize is {version or 'unknown (too old to say)'}; the overlays need v4 or later")
    return path


def copy_of_the_manifests(destination: Path) -> Path:
    """deploy/kubernetes with placeholder files where the development overlay reads
    this clone's key and certificates (never a real one here)."""
    tree = destination / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=shutil.ignore_patterns("secrets"))
    secrets = tree / "overlays" / "development" / "secrets"
    secrets.mkdir()
    for name in DEVELOPMENT_SECRET_FILES:
        (secrets / name).write_text(f"placeholder for {name}, not a key\n")
    return tree


def build(overlay: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def schema_errors(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    errors = []
    for item in objects:
        name = f"{item.get('kind')}/{item.get('metadata', {}).get('name')}"
        try:
            version = kubernetes_validate.validate(dict(item), KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(step) for step in e.absolute_path)
            errors.append(f"{name}: {e.message} (at /{where})")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message}")
        else:
            if version != "1.32":
                errors.append(f"{name}: validated against Kubernetes {version}, not 1.32")
    return errors


# --- What compose says ------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Edge:
    source: str
    target: str
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        port = "any port" if self.port == ANY_PORT else str(self.port)
        return f"{self.source} → {self.target}:{port}/{self.protocol}"


def environment(spec: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in spec.get("environment", {}).items()}


def workload_of(name: str, services: Mapping[str, Any]) -> str | None:
    """The Kubernetes workload a compose host name is: x-2 is x's second instance,
    tasks.x (Swarm's name for all of x's tasks) is x."""
    name = name.removeprefix("tasks.")
    if name not in services:
        return None
    first = re.sub(r"-\d+$", "", name)
    return first if first in services else name


def compose_calls(document: Mapping[str, Any]) -> dict[str, set[Edge]]:
    """Each workload's calls, from the URLs in its compose environment: to another
    workload on that one's port, or out to infrastructure (external here) by port."""
    services = application_services(document)
    infrastructure = set(document["services"]) - set(services)
    calls: dict[str, set[Edge]] = {}
    for name, spec in services.items():
        source = workload_of(name, services)
        assert source is not None
        edges = calls.setdefault(source, set())
        for url in (url for value in environment(spec).values() for url in URL.findall(value)):
            parts = urlsplit(url)
            assert parts.hostname is not None, f"{name}: {url} names no host"
            assert parts.port is not None, f"{name}: {url} names no port"
            if parts.hostname in infrastructure:
                edges.add(Edge(source, EXTERNAL, parts.port))
                continue
            target = workload_of(parts.hostname, services)
            assert target is not None, f"{name}: {url} names no compose service"
            edges.add(Edge(source, target, parts.port))
    return calls


def container_ports(spec: Mapping[str, Any]) -> set[tuple[int, str]]:
    ports = set()
    for entry in spec.get("ports", []):
        text, _, protocol = str(entry).partition("/")
        ports.add((int(text.split(":")[-1]), (protocol or "tcp").upper()))
    return ports


def published_beyond_loopback(spec: Mapping[str, Any]) -> set[int]:
    return {int(str(entry).split(":")[-1]) for entry in spec.get("ports", []) if not str(entry).startswith("127.")}


# --- What the manifests say -------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: tuple[tuple[int, str, str], ...]  # (port, protocol, name)

    def port_names(self) -> dict[str, int]:
        return {name: port for port, _, name in self.ports if name}


STRANGER_POD = Pod(STRANGER, NAMESPACE, {"run": "debug"}, ((8080, "TCP", "http"),))
# The same labels as the gateway's, in another namespace: a policy must not admit it.
OUTSIDER_POD = Pod(OUTSIDER, "elsewhere", {"app.kubernetes.io/name": "gateway"}, ((8080, "TCP", "http"),))
DNS_POD = Pod(DNS, "kube-system", {"k8s-app": "kube-dns"}, ((53, "UDP", "dns"), (53, "TCP", "dns-tcp")))
CONTROLLER_POD = Pod(
    INGRESS_CONTROLLER,
    "ingress-nginx",
    {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"},
    (),
)


def of_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def named(objects: Iterable[Mapping[str, Any]], kind: str) -> dict[str, Mapping[str, Any]]:
    return {item["metadata"]["name"]: item for item in of_kind(objects, kind)}


def the_container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container per pod"
    return dict(containers[0])


def pod_of(deployment: Mapping[str, Any]) -> Pod:
    ports = tuple(
        (int(port["containerPort"]), str(port.get("protocol", "TCP")), str(port.get("name", "")))
        for port in the_container(deployment).get("ports", [])
    )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return Pod(deployment["metadata"]["name"], deployment["metadata"]["namespace"], labels, ports)


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and key in labels and labels[key] in values)
            or (operator == "Exists" and key not in labels)
            or (operator == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def peer_matches(peer: Mapping[str, Any], namespace: str, endpoint: Pod | None) -> bool:
    """Whether a from/to peer covers ``endpoint`` (None: an address outside the cluster)."""
    if "ipBlock" in peer:
        if endpoint is not None:
            # Whether an ipBlock covers pod addresses is the network plugin's choice:
            # counted as covering them, so that the check never misses an edge.
            return True
        block = peer["ipBlock"]
        excluded = any(OUTSIDE_ADDRESS in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
        return OUTSIDE_ADDRESS in ipaddress.ip_network(block["cidr"]) and not excluded
    if endpoint is None:
        return False
    namespaces = peer.get("namespaceSelector")
    if namespaces is None:
        if endpoint.namespace != namespace:
            return False
    elif not matches(namespaces, {"kubernetes.io/metadata.name": endpoint.namespace}):
        return False
    pods = peer.get("podSelector")
    return pods is None or matches(pods, endpoint.labels)


def port_matches(ports: Sequence[Mapping[str, Any]] | None, port: int, protocol: str, names: Mapping[str, int]) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        value = entry.get("port")
        if value is None:
            return True
        number = names.get(value) if isinstance(value, str) else int(value)
        if number is not None and number <= port <= int(entry.get("endPort", number)):
            return True
    return False


def policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    return list(spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"]))


def allowed(
    policies: Sequence[Mapping[str, Any]], direction: str, subject: Pod, peer: Pod | None, port: int, protocol: str
) -> bool:
    """Whether ``subject``'s policies let it talk to ``peer`` (Egress) or hear from it
    (Ingress) on the port of the destination; a pod no policy selects is open."""
    if subject.namespace != NAMESPACE:
        return True
    selecting = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == subject.namespace
        and matches(policy["spec"]["podSelector"], subject.labels)
        and direction in policy_types(policy)
    ]
    if not selecting:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    destination = subject if direction == "Ingress" else peer
    names = destination.port_names() if destination is not None else {}
    for policy in selecting:
        for rule in policy["spec"].get(rules_key) or []:
            if not port_matches(rule.get("ports"), port, protocol, names):
                continue
            peers = rule.get(peers_key)
            if not peers or any(peer_matches(item, policy["metadata"]["namespace"], peer) for item in peers):
                return True
    return False


def outside_ports(policies: Iterable[Mapping[str, Any]]) -> set[tuple[int, str]]:
    """The ports an egress rule names, and ANY_PORT: a port no rule names."""
    ports = {(ANY_PORT, "TCP"), (ANY_PORT, "UDP")}
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            for entry in rule.get("ports") or []:
                if isinstance(entry.get("port"), int):
                    for number in (entry["port"], entry.get("endPort", entry["port"])):
                        ports.add((int(number), str(entry.get("protocol", "TCP"))))
    return ports


def policy_edges(objects: Sequence[Mapping[str, Any]]) -> tuple[set[Edge], set[Edge]]:
    """What the NetworkPolicies let each pod of ours send (egress) and receive
    (ingress), tried against every port of every pod that matters and the outside."""
    policies = of_kind(objects, "NetworkPolicy")
    ours = [pod_of(deployment) for deployment in of_kind(objects, "Deployment")] + [STRANGER_POD]
    others = [DNS_POD, CONTROLLER_POD, OUTSIDER_POD]
    egress: set[Edge] = set()
    ingress: set[Edge] = set()
    for source in ours:
        for target in ours + others:
            for port, protocol, _ in target.ports:
                if allowed(policies, "Egress", source, target, port, protocol):
                    egress.add(Edge(source.name, target.name, port, protocol))
        for port, protocol in outside_ports(policies):
            if allowed(policies, "Egress", source, None, port, protocol):
                egress.add(Edge(source.name, EXTERNAL, port, protocol))
    for target in ours:
        for origin in [*ours, *others, None]:
            for port, protocol, _ in target.ports:
                if allowed(policies, "Ingress", target, origin, port, protocol):
                    ingress.add(Edge(EXTERNAL if origin is None else origin.name, target.name, port, protocol))
    return egress, ingress


def service_target(objects: Sequence[Mapping[str, Any]], name: str, port: int | str) -> Edge:
    """The workload and container port a Service name and port reach (or the outside,
    for an ExternalName Service), as an edge from nowhere in particular."""
    service = named(objects, "Service").get(name)
    assert service is not None, f"no Service {name}"
    number = port if isinstance(port, int) else None
    if service["spec"].get("type") == "ExternalName":
        assert number is not None
        return Edge("", EXTERNAL, number)
    entry = next((item for item in service["spec"]["ports"] if item["port"] == port or item.get("name") == port), None)
    assert entry is not None, f"Service {name} has no port {port}"
    deployments = [
        item
        for item in of_kind(objects, "Deployment")
        if matches({"matchLabels": service["spec"]["selector"]}, item["spec"]["template"]["metadata"]["labels"])
    ]
    assert len(deployments) == 1, f"Service {name} selects {len(deployments)} Deployments"
    pod = pod_of(deployments[0])
    target = entry.get("targetPort", entry["port"])
    number = pod.port_names()[target] if isinstance(target, str) else int(target)
    return Edge("", pod.name, number, str(entry.get("protocol", "TCP")))


def ingress_edges(objects: Sequence[Mapping[str, Any]]) -> set[Edge]:
    """The ingress controller → each Ingress backend's pod port."""
    edges = set()
    for item in of_kind(objects, "Ingress"):
        for rule in item["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                port = backend["port"].get("number", backend["port"].get("name"))
                target = service_target(objects, backend["name"], port)
                edges.add(Edge(INGRESS_CONTROLLER, target.target, target.port, target.protocol))
    return edges


def expected_edges(document: Mapping[str, Any], objects: Sequence[Mapping[str, Any]]) -> tuple[set[Edge], set[Edge]]:
    calls = set().union(*compose_calls(document).values())
    internal = {edge for edge in calls if edge.target != EXTERNAL}
    ours = [deployment["metadata"]["name"] for deployment in of_kind(objects, "Deployment")] + [STRANGER]
    dns = {Edge(name, DNS, 53, protocol) for name in ours for protocol in ("UDP", "TCP")}
    return calls | dns, internal | ingress_edges(objects)


def edge_differences(document: Mapping[str, Any], objects: Sequence[Mapping[str, Any]]) -> list[str]:
    expected_egress, expected_ingress = expected_edges(document, objects)
    egress, ingress = policy_edges(objects)
    differences = []
    for direction, expected, actual in (("egress", expected_egress, egress), ("ingress", expected_ingress, ingress)):
        differences += [f"{direction}: missing {edge}" for edge in sorted(expected - actual)]
        differences += [f"{direction}: extra {edge}" for edge in sorted(actual - expected)]
    return differences


def container_environment(objects: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any]) -> dict[str, str]:
    """The variables the container gets, their values read from the ConfigMaps and
    Secrets of the build (a missing one fails)."""

    def data(kind: str, name: str) -> dict[str, str]:
        item = named(objects, kind).get(name)
        assert item is not None, f"{deployment['metadata']['name']} names a missing {kind} {name}"
        values = dict(item.get("data", {}))
        if kind == "Secret":
            return {key: base64.b64decode(value).decode() for key, value in values.items()}
        return {key: str(value) for key, value in values.items()}

    container = the_container(deployment)
    variables: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            variables.update(data("ConfigMap", source["configMapRef"]["name"]))
        else:
            variables.update(data("Secret", source["secretRef"]["name"]))
    for variable in container.get("env", []):
        reference = variable.get("valueFrom", {})
        if "value" in variable:
            variables[variable["name"]] = str(variable["value"])
        elif "configMapKeyRef" in reference:
            variables[variable["name"]] = data("ConfigMap", reference["configMapKeyRef"]["name"])[
                reference["configMapKeyRef"]["key"]
            ]
        elif "secretKeyRef" in reference:
            variables[variable["name"]] = data("Secret", reference["secretKeyRef"]["name"])[
                reference["secretKeyRef"]["key"]
            ]
    return variables


def configured_calls(objects: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any]) -> set[Edge]:
    """The calls a workload's URLs make in the cluster: Service names resolved to the
    pods and ports they reach."""
    source = deployment["metadata"]["name"]
    edges = set()
    for value in container_environment(objects, deployment).values():
        for url in URL.findall(value):
            parts = urlsplit(url)
            assert parts.hostname is not None, f"{source}: {url} names no host"
            assert parts.port is not None, f"{source}: {url} names no port"
            target = service_target(objects, parts.hostname, parts.port)
            edges.add(Edge(source, target.target, target.port, target.protocol))
    return edges


def referenced(deployment: Mapping[str, Any], kind: str) -> set[str]:
    """The ConfigMaps or Secrets a Deployment's pod reads."""
    spec = deployment["spec"]["template"]["spec"]
    ref, key_ref = ("configMapRef", "configMapKeyRef") if kind == "ConfigMap" else ("secretRef", "secretKeyRef")
    names = set()
    for container in spec["containers"]:
        names |= {source[ref]["name"] for source in container.get("envFrom", []) if ref in source}
        names |= {
            variable["valueFrom"][key_ref]["name"]
            for variable in container.get("env", [])
            if key_ref in variable.get("valueFrom", {})
        }
    for volume in spec.get("volumes", []):
        if kind == "Secret" and "secret" in volume:
            names.add(volume["secret"]["secretName"])
        if kind == "ConfigMap" and "configMap" in volume:
            names.add(volume["configMap"]["name"])
    return names


def unhashed(name: str) -> str:
    """A generated name without kustomize's content hash."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def memory_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", text).groups()  # type: ignore[union-attr]
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(number) * scale[unit.lower() if len(unit) == 1 else unit]


# --- Fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return load_compose(compose_file=COMPOSE, env_file=ENV_EXAMPLE, environ={})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    tree = copy_of_the_manifests(tmp_path_factory.mktemp("manifests"))
    return {overlay: build(tree / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest, built: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return built[request.param]


def deployments(objects: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return named(objects, "Deployment")


# --- Tests ------------------------------------------------------------------------


def test_every_overlay_builds_one_deployment_per_compose_service_in_the_namespace(objects, document):
    services = application_services(document)
    assert set(deployments(objects)) == {workload_of(name, services) for name in services}
    assert [item["metadata"]["name"] for item in of_kind(objects, "Namespace")] == [NAMESPACE]
    elsewhere = [
        f"{item['kind']}/{item['metadata']['name']}"
        for item in objects
        if item["kind"] != "Namespace" and item["metadata"].get("namespace") != NAMESPACE
    ]
    assert elsewhere == []


def test_every_object_validates_against_the_kubernetes_1_32_schemas(objects):
    assert schema_errors(objects) == []


def test_the_compose_calls_are_read(document):
    calls = compose_calls(document)
    assert Edge("order-service", "event-store", 50054) in calls["order-service"]
    assert Edge("notification-service", "user-service", 8001) in calls["notification-service"]
    assert Edge("gateway", EXTERNAL, 6379) in calls["gateway"]
    assert all(calls.values()), calls


def test_the_network_policies_allow_exactly_the_calls_compose_makes(objects, document):
    assert edge_differences(document, objects) == []


def test_only_the_gateway_is_reached_from_outside_on_a_port_compose_publishes(objects, document):
    edges = ingress_edges(objects)
    assert {edge.target for edge in edges} == {"gateway"}
    published = published_beyond_loopback(document["services"]["gateway"])
    assert {edge.port for edge in edges} <= published


def test_the_workloads_call_the_services_compose_calls(built, document):
    objects = built["development"]
    calls = compose_calls(document)
    for name, deployment in deployments(objects).items():
        assert configured_calls(objects, deployment) == calls[name], name


def test_the_workloads_get_every_variable_compose_sets(built, document):
    objects = built["development"]
    services = application_services(document)
    for name, deployment in deployments(objects).items():
        variables = container_environment(objects, deployment)
        assert set(environment(services[name])) <= set(variables), name
        assert variables["ENVIRONMENT"] == "development"
        mounted = {
            f"{mount['mountPath']}/{item['path']}"
            for mount in the_container(deployment).get("volumeMounts", [])
            for volume in deployment["spec"]["template"]["spec"]["volumes"]
            if volume["name"] == mount["name"] and "secret" in volume
            for item in volume["secret"]["items"]
        }
        files = {value for value in variables.values() if value.startswith("/run/secrets/")}
        assert files <= mounted, name


def test_the_secrets_come_from_the_development_overlay_or_the_operators(built):
    development, production = built["development"], built["production"]
    generated = {unhashed(name) for name in named(development, "Secret")}
    for objects in (development, production):
        for name, deployment in deployments(objects).items():
            assert referenced(deployment, "ConfigMap") <= set(named(objects, "ConfigMap")), name
    for name, deployment in deployments(development).items():
        assert referenced(deployment, "Secret") <= set(named(development, "Secret")), name
    assert of_kind(production, "Secret") == []
    wanted = set().union(*(referenced(deployment, "Secret") for deployment in deployments(production).values()))
    assert wanted == generated
    tls = {entry["secretName"] for item in of_kind(production, "Ingress") for entry in item["spec"].get("tls", [])}
    assert tls == {PUBLIC_TLS_SECRET}


def test_the_deployments_keep_compose_s_command_image_ports_and_memory(objects, document):
    services = application_services(document)
    for name, deployment in deployments(objects).items():
        spec = services[name]
        container = the_container(deployment)
        assert container["command"] == spec["command"], name
        assert container["image"].rpartition(":")[0] == f"interchange/{name}", name
        ports = {(port, protocol) for port, protocol, _ in pod_of(deployment).ports}
        assert ports == container_ports(spec), name
        assert memory_bytes(container["resources"]["limits"]["memory"]) == memory_bytes(spec["mem_limit"]), name
        assert container["resources"]["requests"]["cpu"], name


def test_every_workload_runs_at_least_as_many_pods_as_compose_instances(objects, document):
    services = application_services(document)
    autoscalers = {item["spec"]["scaleTargetRef"]["name"]: item for item in of_kind(objects, "HorizontalPodAutoscaler")}
    for name, deployment in deployments(objects).items():
        instances = sum(1 for service in services if workload_of(service, services) == name)
        least = autoscalers[name]["spec"]["minReplicas"] if name in autoscalers else deployment["spec"]["replicas"]
        assert least >= max(instances, 2), name
        if name in autoscalers:
            # Left to the autoscaler: a count here would reset it on every apply.
            assert "replicas" not in deployment["spec"], name


def test_probes_and_pre_stop_match_the_drain(objects, document):
    services = application_services(document)
    for name, deployment in deployments(objects).items():
        pod, container = pod_of(deployment), the_container(deployment)
        http_port = int(environment(services[name])["HTTP_PORT"])
        for probe, path in (("readinessProbe", "/health"), ("livenessProbe", "/health/live")):
            get = container[probe]["httpGet"]
            port = pod.port_names()[get["port"]] if isinstance(get["port"], str) else get["port"]
            assert (get["path"], port) == (path, http_port), f"{name} {probe}"
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace == int(str(services[name]["stop_grace_period"]).removesuffix("s")), name
        # No binary: the image may have no sleep (the kubelet's own sleep action).
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 1, name
        assert pause + SLOWEST_STOP_SECONDS <= grace, name


def test_every_workload_has_a_disruption_budget_and_the_stateless_ones_an_autoscaler(objects):
    budgets = of_kind(objects, "PodDisruptionBudget")
    autoscalers = of_kind(objects, "HorizontalPodAutoscaler")
    for name, deployment in deployments(objects).items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [item for item in budgets if matches(item["spec"]["selector"], labels)]
        assert [item["spec"].get("minAvailable") for item in covering] == [1], name
        scaling = [item for item in autoscalers if item["spec"]["scaleTargetRef"]["name"] == name]
        if name in STATEFUL:
            assert scaling == [], name
            continue
        assert len(scaling) == 1, name
        (autoscaler,) = scaling
        assert autoscaler["apiVersion"] == "autoscaling/v2"
        assert autoscaler["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert [metric["resource"]["name"] for metric in autoscaler["spec"]["metrics"]] == ["cpu"], name


def test_the_grpc_servers_have_headless_services_for_compose_s_tasks_names(objects, document):
    services = named(objects, "Service")
    aliases = network_aliases(document)
    assert aliases
    for alias in aliases:
        workload = workload_of(alias, application_services(document))
        assert workload is not None
        service = services[f"{workload}-tasks"]
        assert service["spec"]["clusterIP"] == "None", alias
        assert matches({"matchLabels": service["spec"]["selector"]}, pod_of(deployments(objects)[workload]).labels)
    for name, service in services.items():
        if not name.endswith("-tasks") and service["spec"].get("type") != "ExternalName":
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name
            assert service["spec"].get("clusterIP") != "None", name


def test_the_pods_run_unprivileged_on_a_read_only_root(objects):
    for name, deployment in deployments(objects).items():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        context = the_container(deployment)["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert spec["automountServiceAccountToken"] is False, name


# --- The checks fail on broken manifests --------------------------------------------


def json_patch(kind: str, name: str, *operations: dict[str, Any]) -> dict[str, Any]:
    return {"target": {"kind": kind, "name": name}, "patch": yaml.safe_dump(list(operations))}


def rule_to(workload: str, port: int) -> dict[str, Any]:
    return {
        "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": workload}}}],
        "ports": [{"port": port, "protocol": "TCP"}],
    }


def rule_from(workload: str, port: int) -> dict[str, Any]:
    return {
        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": workload}}}],
        "ports": [{"port": port, "protocol": "TCP"}],
    }


@dataclass(frozen=True)
class Breakage:
    patches: tuple[dict[str, Any], ...]
    reported: Callable[[list[str], list[str]], bool]  # (schema errors, edge differences)


BREAKAGES = {
    "an unknown field in a Deployment": Breakage(
        (
            json_patch(
                "Deployment",
                "order-service",
                {"op": "add", "path": "/spec/template/spec/containers/0/readinesProbe", "value": {}},
            ),
        ),
        lambda errors, _: any("Deployment/order-service" in e and "readinesProbe" in e for e in errors),
    ),
    "a wrong type": Breakage(
        (
            json_patch(
                "Deployment",
                "gateway",
                {"op": "replace", "path": "/spec/template/spec/terminationGracePeriodSeconds", "value": "thirty"},
            ),
        ),
        lambda errors, _: any("Deployment/gateway" in e and "'thirty'" in e for e in errors),
    ),
    "an extra call": Breakage(
        (
            json_patch(
                "NetworkPolicy",
                "order-service",
                {"op": "add", "path": "/spec/egress/-", "value": rule_to("notification-service", 8003)},
            ),
            json_patch(
                "NetworkPolicy",
                "notification-service",
                {"op": "add", "path": "/spec/ingress/-", "value": rule_from("order-service", 8003)},
            ),
        ),
        lambda _, edges: (
            sorted(edges)
            == [
                "egress: extra order-service → notification-service:8003/TCP",
                "ingress: extra order-service → notification-service:8003/TCP",
            ]
        ),
    ),
    "a missing call": Breakage(
        (json_patch("NetworkPolicy", "order-service", {"op": "remove", "path": "/spec/egress/0"}),),
        lambda _, edges: edges == ["egress: missing order-service → event-store:50054/TCP"],
    ),
    "egress anywhere": Breakage(
        (json_patch("NetworkPolicy", "event-store", {"op": "add", "path": "/spec/egress/-", "value": {}}),),
        lambda _, edges: (
            "egress: extra event-store → gateway:8080/TCP" in edges
            and "egress: extra event-store → (outside: an external dependency):any port/UDP" in edges
        ),
    ),
    # The gateway's labels, but in any namespace: the outsider that wears them gets in.
    "ingress from any namespace": Breakage(
        (
            json_patch(
                "NetworkPolicy",
                "user-service",
                {"op": "add", "path": "/spec/ingress/0/from/0/namespaceSelector", "value": {}},
            ),
        ),
        lambda _, edges: edges == [f"ingress: extra {OUTSIDER} → user-service:8001/TCP"],
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES), ids=list(BREAKAGES))
def test_a_broken_overlay_is_reported(breakage, document, tmp_path):
    tree = copy_of_the_manifests(tmp_path)
    overlay = tree / "overlays" / "production"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["patches"] = [*kustomization.get("patches", []), *BREAKAGES[breakage].patches]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    objects = build(overlay)
    errors, edges = schema_errors(objects), edge_differences(document, objects)
    assert BREAKAGES[breakage].reported(errors, edges), (errors, edges)
    assert errors or edges
