"""`helm lint` and `helm template` of charts/tradebot: what renders, for which values, and how safely."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts._helm import (
    CHART,
    MONITORING_API,
    NAMESPACE,
    RELEASE,
    VALUES_DIR,
    Manifest,
    by_kind,
    component,
    containers,
    env_of,
    find,
    helm,
    kinds,
    pod_spec,
    render,
    render_text,
    template_args,
    workloads,
)
from tests.plugins._proc import REPO_ROOT
from tradebot.adapters.connect import PipelineSettings
from tradebot.kit.settings import ENV_PREFIX, load_settings
from tradebot.strategy.command import StrategySettings

VALUES_FILES = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))
# Every values set the chart is rendered with: the defaults, then each file under tests/charts/values/.
VALUE_SETS = [pytest.param((), id="defaults")] + [pytest.param((name,), id=name) for name in VALUES_FILES]
# The values sets that deploy the dashboard (every one but the API-only set, which the test below checks).
DASHBOARD_VALUE_SETS = [p for p in VALUE_SETS if p.values[0] != ("api-only.yaml",)]
APP_COMPONENTS = ("simulator", "feed", "executor", "api", "dashboard", "operator")
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def test_values_files_exist() -> None:
    assert {"external.yaml", "default-strategy.yaml", "api-only.yaml"} <= set(VALUES_FILES)


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "tradebot"
    assert str(chart["appVersion"]) == "0.1.0"
    for required in ("values.yaml", "values.schema.json", "templates/NOTES.txt", "templates/_helpers.tpl"):
        assert (CHART / required).is_file(), required
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    # Every top-level key of values.yaml is described by the schema.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint(helm_bin: Path, strict: bool) -> None:
    result = helm(helm_bin, "lint", str(CHART), *(["--strict"] if strict else []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_values_files(helm_bin: Path, values_file: str) -> None:
    result = helm(helm_bin, "lint", "--strict", str(CHART), "-f", str(VALUES_DIR / values_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_has_every_component(helm_bin: Path) -> None:
    manifests = render(helm_bin)
    deployments = {component(d) for d in by_kind(manifests, "Deployment")}
    assert deployments == set(APP_COMPONENTS)
    assert {component(s) for s in by_kind(manifests, "StatefulSet")} == {"kafka", "redis"}
    kafka = find(manifests, "StatefulSet", "kafka")
    kafka_container = next(c for c in containers(kafka, init=False) if c["name"] == "kafka")
    assert kafka_container["image"] == "apache/kafka:4.1.1"
    assert env_of(kafka_container)["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    redis = find(manifests, "StatefulSet", "redis")
    redis_image = next(containers(redis))["image"]
    assert redis_image.startswith("redis:7.4.")
    assert "latest" not in redis_image
    for workload in workloads(manifests):
        for container in containers(workload):
            assert ":" in container["image"]
            assert not container["image"].endswith(":latest")
    assert by_kind(manifests, "PodDisruptionBudget")
    assert "ClusterRole" in kinds(manifests)
    assert "ClusterRoleBinding" in kinds(manifests)
    assert "ServiceAccount" in kinds(manifests)
    assert "TradingStrategy" not in kinds(manifests)


def _service_ports(manifests: list[Manifest], component_name: str) -> dict[str, int]:
    service = find(manifests, "Service", component_name)
    return {p["name"]: p["port"] for p in service["spec"]["ports"]}


def test_services_and_ports(helm_bin: Path) -> None:
    manifests = render(helm_bin)
    assert _service_ports(manifests, "simulator")["ws"] == 6789
    assert _service_ports(manifests, "api") == {"http": 8080, "metrics": 9090}
    assert _service_ports(manifests, "dashboard")["ui"] == 8501
    for name in ("simulator", "feed", "executor", "dashboard"):
        assert _service_ports(manifests, name)["metrics"] == 9090, name
        assert "http" not in _service_ports(manifests, name), name  # no routes of their own
    assert _service_ports(manifests, "operator")["metrics"] == 9090
    # Every service is probed on its metrics port: the API's own port may be closed to the kubelet's peers.
    for name in ("simulator", "feed", "executor", "api", "dashboard"):
        container = pod_spec(find(manifests, "Deployment", name))["containers"][0]
        env = env_of(container)
        assert (env["TRADEBOT_HTTP_PORT"], env["TRADEBOT_METRICS_PORT"]) == ("8080", "9090"), name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9090, name
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "metrics", (name, probe)
    assert _service_ports(manifests, "kafka")["kafka"] == 9092
    assert _service_ports(manifests, "redis")["redis"] == 6379
    # Every Service's selector matches the pod labels of a workload, and its targetPorts are named container ports.
    pods = [(pod_spec(w), w["spec"]["template"]["metadata"]["labels"]) for w in workloads(manifests)]
    for service in by_kind(manifests, "Service"):
        selector = service["spec"]["selector"]
        matching = [spec for spec, labels in pods if selector.items() <= labels.items()]
        assert matching, f"Service {service['metadata']['name']} selects no pod"
        port_names = {p["name"] for spec in matching for c in spec["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)


def _assert_restricted(container: dict[str, Any], where: str) -> None:
    context = container.get("securityContext")
    assert context, f"{where}: no securityContext"
    assert context.get("runAsNonRoot") is True, where
    assert context.get("runAsUser") == 10001, where
    assert context.get("readOnlyRootFilesystem") is True, where
    assert context.get("allowPrivilegeEscalation") is False, where
    assert context.get("capabilities", {}).get("drop") == ["ALL"], where
    assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    assert not context.get("privileged", False), where


@pytest.mark.parametrize("values_files", VALUE_SETS)
def test_every_pod_is_restricted_probed_and_bounded(helm_bin: Path, values_files: tuple[str, ...]) -> None:
    manifests = render(helm_bin, *values_files)
    assert workloads(manifests)
    for workload in workloads(manifests):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        assert pod_context["runAsUser"] == 10001, name
        assert pod_context["seccompProfile"]["type"] == "RuntimeDefault", name
        for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host_namespace), f"{name}: {host_namespace}"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(workload):
            where = f"{name} container {container['name']}"
            _assert_restricted(container, where)
            resources = container.get("resources", {})
            assert resources.get("requests", {}).keys() >= {"cpu", "memory"}, where
            assert resources.get("limits", {}).keys() >= {"cpu", "memory"}, where
        for container in containers(workload, init=False):
            where = f"{name} container {container['name']}"
            # A writable /tmp on an emptyDir, since the root filesystem is read-only.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            if workload["kind"] == "Job":
                continue  # a run to completion (the uninstall hook) has nothing to probe
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe in container, f"{where}: no {probe}"
            # HTTP probes point at a declared container port.
            declared = {p["name"] for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])
            }
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                http = container[probe].get("httpGet")
                if http is not None:
                    assert http["port"] in declared, f"{where} {probe} port {http['port']}"


@pytest.mark.parametrize("values_files", VALUE_SETS)
def test_labels_on_every_resource(helm_bin: Path, values_files: tuple[str, ...]) -> None:
    manifests = render(helm_bin, *values_files)
    for manifest in manifests:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        labels = manifest["metadata"].get("labels", {})
        for label in STANDARD_LABELS:
            assert label in labels, f"{name}: no {label}"
        assert labels["app.kubernetes.io/instance"] == RELEASE, name
        assert labels["app.kubernetes.io/part-of"] == "tradebot", name
        assert labels["app.kubernetes.io/managed-by"] == "Helm", name
        if manifest["metadata"].get("namespace") is not None:
            assert manifest["metadata"]["namespace"] == NAMESPACE, name
    for workload in workloads(manifests):
        name = workload["metadata"]["name"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        if workload["kind"] != "Job":  # a Job's selector is generated by the API server
            selector = workload["spec"]["selector"]["matchLabels"]
            assert "app.kubernetes.io/component" in selector, name
            assert selector.items() <= pod_labels.items(), name
        for label in STANDARD_LABELS:
            assert label in pod_labels, f"{name} pod template: no {label}"


def test_main_containers_use_the_tradebot_command_contract(helm_bin: Path) -> None:
    manifests = render(helm_bin)
    for name in APP_COMPONENTS:
        deployment = find(manifests, "Deployment", name)
        container = pod_spec(deployment)["containers"][0]
        if name == "dashboard":
            # Streamlit listens on the pod's address, on the chart's port (the command defaults to 127.0.0.1).
            assert container["args"] == [name, "--host", "0.0.0.0", "--port", "8501"]
        else:
            assert container["args"] == [name]
        expected = (
            "ghcr.io/tradebot/tradebot-dashboard:0.1.0"
            if name == "dashboard"
            else "ghcr.io/tradebot/tradebot:0.1.0"
        )
        assert container["image"] == expected
    api = env_of(pod_spec(find(manifests, "Deployment", "api"))["containers"][0])
    assert api["TRADEBOT_API_TOKEN"]["secretKeyRef"]["key"] == "api-token"
    assert api["TRADEBOT_REDIS_URL"] == f"redis://{RELEASE}-redis:6379/0"
    feed = env_of(pod_spec(find(manifests, "Deployment", "feed"))["containers"][0])
    assert feed["TRADEBOT_FEED_SOURCE"] == "simulator"
    assert feed["TRADEBOT_FEED_URL"] == f"ws://{RELEASE}-simulator:6789"
    assert feed["TRADEBOT_KAFKA_BOOTSTRAP"] == f"{RELEASE}-kafka:9092"
    assert feed["TRADEBOT_SYMBOLS"] == "BTCUSDT,ETHUSDT"
    assert feed["TRADEBOT_LOG_JSON"] == "true"
    dashboard = env_of(pod_spec(find(manifests, "Deployment", "dashboard"))["containers"][0])
    assert dashboard["TRADEBOT_API_URL"] == f"http://{RELEASE}-api:8080"
    dashboard_ports = {
        p["name"]: p["containerPort"]
        for p in pod_spec(find(manifests, "Deployment", "dashboard"))["containers"][0]["ports"]
    }
    assert dashboard_ports == {"ui": 8501, "metrics": 9090}
    operator = pod_spec(find(manifests, "Deployment", "operator"))
    liveness = operator["containers"][0]["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in operator["containers"][0]["ports"]}
    assert ports[liveness["port"]] == 8080
    assert ports["metrics"] == 9090
    assert operator["serviceAccountName"] == f"{RELEASE}-operator"


def test_operator_rbac(helm_bin: Path) -> None:
    """Cluster-wide: one ClusterRole with no delete and no wildcard (tests/charts/test_operator_rbac.py asks
    the API server what it grants, verb by verb)."""
    manifests = render(helm_bin)
    (role,) = by_kind(manifests, "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert not any({"*", "delete", "deletecollection", "update"} & verbs for verbs in granted.values()), (
        granted
    )
    assert ("", "namespaces") not in granted
    binding = by_kind(manifests, "ClusterRoleBinding")[0]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": NAMESPACE}
    ]


def test_operator_rbac_with_watch_namespaces_is_namespaced(helm_bin: Path) -> None:
    manifests = render(helm_bin, sets=("operator.watchNamespaces={team-a,team-b}",))
    assert "ClusterRole" not in kinds(manifests)
    assert "ClusterRoleBinding" not in kinds(manifests)
    roles = {m["metadata"]["namespace"] for m in by_kind(manifests, "Role") if component(m) == "operator"}
    bindings = {
        m["metadata"]["namespace"] for m in by_kind(manifests, "RoleBinding") if component(m) == "operator"
    }
    # The release's namespace too: the shared-env Secret is read there.
    assert roles == bindings == {"team-a", "team-b", NAMESPACE}


def test_network_policies(helm_bin: Path) -> None:
    manifests = render(helm_bin)
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(manifests, "NetworkPolicy")}
    deny = policies[f"{RELEASE}-default-deny"]
    assert deny["podSelector"] == {"matchLabels": {"app.kubernetes.io/part-of": "tradebot"}}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny

    def egress_components(name: str) -> set[str]:
        peers = [peer for rule in policies[name].get("egress", []) for peer in rule.get("to", [])]
        return {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in peers
            if "podSelector" in p
        }

    def ingress_components(name: str) -> set[str]:
        peers = [peer for rule in policies[name].get("ingress", []) for peer in rule.get("from", [])]
        return {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for p in peers
            if "podSelector" in p
        }

    # The feed keeps its per-source resume point (last sequence) in Redis.
    assert egress_components(f"{RELEASE}-feed") == {"kafka", "redis", "simulator"}
    assert egress_components(f"{RELEASE}-strategy") == {"kafka", "redis"}
    assert egress_components(f"{RELEASE}-executor") == {"kafka", "redis"}
    assert egress_components(f"{RELEASE}-api") == {
        "kafka",
        "redis",
    }  # halt/resume are recorded on strategy-control
    assert egress_components(f"{RELEASE}-dashboard") == {"api"}
    # Kafka's broker reaches its own listener (controller and inter-broker traffic) through the policies too.
    assert egress_components(f"{RELEASE}-kafka") == {"kafka"}
    assert ingress_components(f"{RELEASE}-kafka") == {"feed", "executor", "api", "strategy", "kafka"}
    assert ingress_components(f"{RELEASE}-redis") == {"feed", "executor", "api", "strategy"}
    # Strategy pods may live in any namespace: Kafka and Redis admit them from all.
    for store in (f"{RELEASE}-kafka", f"{RELEASE}-redis"):
        strategy_peers = [
            peer
            for rule in policies[store]["ingress"]
            for peer in rule["from"]
            if peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "strategy"
        ]
        assert len(strategy_peers) == 1, strategy_peers
        assert strategy_peers[0].get("namespaceSelector") == {}, strategy_peers
    assert ingress_components(f"{RELEASE}-simulator") == {"feed"}
    # Prometheus (metricsFrom) reaches only the ports named "metrics"; clients (ingressFrom) reach the api
    # (8080) and the dashboard (8501).
    assert [p["port"] for p in policies[f"{RELEASE}-metrics"]["ingress"][0]["ports"]] == ["metrics"]
    assert [p["port"] for p in policies[f"{RELEASE}-api"]["ingress"][0]["ports"]] == [8080]
    assert [p["port"] for p in policies[f"{RELEASE}-dashboard"]["ingress"][0]["ports"]] == [8501]
    operator_egress = policies[f"{RELEASE}-operator"]["egress"][0]
    assert {p["port"] for p in operator_egress["ports"]} == {443, 6443}
    # The operator and its uninstall hook reach the API server; no other pod does.
    assert policies[f"{RELEASE}-operator"]["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["operator", "uninstall"]}
    ]


def test_monitoring_objects_follow_the_capability(helm_bin: Path) -> None:
    without = kinds(render(helm_bin))
    assert "ServiceMonitor" not in without
    assert "PrometheusRule" not in without
    assert "PodMonitor" not in without
    manifests = render(helm_bin, api_versions=(MONITORING_API,))
    monitor = by_kind(manifests, "ServiceMonitor")
    rule = by_kind(manifests, "PrometheusRule")
    assert len(monitor) == 1
    assert len(rule) == 1
    assert {e["port"] for e in monitor[0]["spec"]["endpoints"]} == {"metrics"}
    podmonitor = by_kind(manifests, "PodMonitor")
    assert [e["port"] for e in podmonitor[0]["spec"]["podMetricsEndpoints"]] == ["metrics"]
    source = yaml.safe_load((REPO_ROOT / "manifests" / "monitoring" / "prometheus-rules.yaml").read_text())
    assert rule[0]["spec"]["groups"] == source["groups"]
    disabled = render(
        helm_bin,
        api_versions=(MONITORING_API,),
        sets=("monitoring.serviceMonitor.enabled=false", "monitoring.prometheusRule.enabled=false"),
    )
    assert "ServiceMonitor" not in kinds(disabled)
    assert "PrometheusRule" not in kinds(disabled)


def test_grafana_dashboard_configmap(helm_bin: Path) -> None:
    manifests = render(helm_bin)
    dashboards = [
        c for c in by_kind(manifests, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    (payload,) = dashboards[0]["data"].values()
    source = (REPO_ROOT / "manifests" / "monitoring" / "grafana-dashboard.json").read_text()
    assert json.loads(payload) == json.loads(source)


@pytest.mark.parametrize("name", ["prometheus-rules.yaml", "grafana-dashboard.json"])
def test_chart_copies_match_manifests_monitoring(name: str) -> None:
    chart_copy = CHART / "files" / name
    source = REPO_ROOT / "manifests" / "monitoring" / name
    assert chart_copy.read_bytes() == source.read_bytes(), f"run: cp {source} {chart_copy}"


def test_external_kafka_redis_and_existing_secret(helm_bin: Path) -> None:
    manifests = render(helm_bin, "external.yaml")
    assert not by_kind(manifests, "StatefulSet")
    secrets = {s["metadata"]["name"] for s in by_kind(manifests, "Secret")}
    assert RELEASE not in secrets  # no credential Secret: existingSecret is used
    values = yaml.safe_load((VALUES_DIR / "external.yaml").read_text())
    for name in ("feed", "executor"):
        container = pod_spec(find(manifests, "Deployment", name))["containers"][0]
        assert env_of(container)["TRADEBOT_KAFKA_BOOTSTRAP"] == values["externalKafka"]["bootstrap"]
    for name in ("executor", "api"):
        container = pod_spec(find(manifests, "Deployment", name))["containers"][0]
        names = [e["name"] for e in container["env"]]
        # The password is defined before the URL so that $(TRADEBOT_REDIS_PASSWORD) expands.
        assert names.index("TRADEBOT_REDIS_PASSWORD") < names.index("TRADEBOT_REDIS_URL")
        env = env_of(container)
        assert env["TRADEBOT_REDIS_URL"] == values["externalRedis"]["url"]
        assert env["TRADEBOT_REDIS_PASSWORD"]["secretKeyRef"] == {
            "name": "tradebot-credentials",
            "key": "redis-password",
        }
    env = env_of(pod_spec(find(manifests, "Deployment", "api"))["containers"][0])
    assert env["TRADEBOT_API_TOKEN"]["secretKeyRef"] == {"name": "tradebot-credentials", "key": "api-token"}
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(manifests, "NetworkPolicy")}
    executor_ports = {p["port"] for rule in policies[f"{RELEASE}-executor"]["egress"] for p in rule["ports"]}
    assert executor_ports == {9093, 6380}


def test_the_api_only_values_deploy_no_dashboard(helm_bin: Path) -> None:
    manifests = render(helm_bin, "api-only.yaml")
    assert not any(m["kind"] == "Deployment" and component(m) == "dashboard" for m in manifests)


@pytest.mark.parametrize("values_files", DASHBOARD_VALUE_SETS)
def test_the_dashboard_gets_no_api_token_unless_opted_in(
    helm_bin: Path, values_files: tuple[str, ...]
) -> None:
    """Issue 14.1: with the token in its pod, the dashboard was a halt/resume proxy for anyone reaching it."""
    manifests = render(helm_bin, *values_files)
    dashboard = find(manifests, "Deployment", "dashboard")
    assert "TRADEBOT_API_TOKEN" not in env_of(pod_spec(dashboard)["containers"][0])
    opted_in = find(
        render(helm_bin, *values_files, sets=("dashboard.controlWithApiToken=true",)),
        "Deployment",
        "dashboard",
    )
    token = env_of(pod_spec(opted_in)["containers"][0])["TRADEBOT_API_TOKEN"]
    assert token["secretKeyRef"]["key"] == "api-token"


def test_the_dashboard_upload_limit_fits_its_memory_limit(helm_bin: Path) -> None:
    """Issue 14.14: the backtest page read any upload into memory; the chart bounds it by the pod's limit."""
    container = pod_spec(find(render(helm_bin), "Deployment", "dashboard"))["containers"][0]
    upload_mb = int(env_of(container)["TRADEBOT_UPLOAD_MAX_MB"])
    memory = container["resources"]["limits"]["memory"]
    assert memory.endswith("Mi")
    assert 1 <= upload_mb * 20 <= int(memory.removesuffix("Mi"))  # parsed twice its size, four kept
    raised = pod_spec(find(render(helm_bin, sets=("dashboard.uploadMaxMB=64",)), "Deployment", "dashboard"))
    assert env_of(raised["containers"][0])["TRADEBOT_UPLOAD_MAX_MB"] == "64"


def test_redis_auth(helm_bin: Path) -> None:
    manifests = render(helm_bin, "redis-auth.yaml")
    secret = next(s for s in by_kind(manifests, "Secret") if s["metadata"]["name"] == RELEASE)
    assert set(secret["data"]) == {"api-token", "redis-password"}
    redis = pod_spec(find(manifests, "StatefulSet", "redis"))["containers"][0]
    assert "--requirepass" in redis["args"][0]
    executor = env_of(pod_spec(find(manifests, "Deployment", "executor"))["containers"][0])
    assert executor["TRADEBOT_REDIS_URL"] == f"redis://:$(TRADEBOT_REDIS_PASSWORD)@{RELEASE}-redis:6379/0"
    # Strategy pods (in any namespace) get Redis with its password, their only credential; never the API token.
    shared = next(s for s in by_kind(manifests, "Secret") if s["metadata"]["name"].endswith("-shared-env"))
    assert shared["stringData"]["TRADEBOT_REDIS_URL"] == (
        f"redis://:not-a-real-password@{RELEASE}-redis.{NAMESPACE}.svc:6379/0"
    )
    assert shared["stringData"]["TRADEBOT_KAFKA_BOOTSTRAP"] == f"{RELEASE}-kafka.{NAMESPACE}.svc:9092"
    assert not any("not-a-real-token" in value for value in shared["stringData"].values())
    feed = env_of(pod_spec(find(manifests, "Deployment", "feed"))["containers"][0])
    assert feed["TRADEBOT_FEED_SOURCE"] == "binance"
    assert feed["TRADEBOT_FEED_URL"].startswith("wss://")


def test_the_env_handed_to_strategy_pods_is_read_by_the_strategy(helm_bin: Path) -> None:
    """Every key of the Secret the operator mounts into strategy pods names a strategy setting."""
    shared = next(
        s for s in by_kind(render(helm_bin), "Secret") if s["metadata"]["name"].endswith("-shared-env")
    )
    read = {f"{ENV_PREFIX}{name.upper()}" for name in StrategySettings.model_fields}
    assert "TRADEBOT_KAFKA_BOOTSTRAP" in shared["stringData"]
    assert set(shared["stringData"]) <= read, set(shared["stringData"]) - read


def test_default_strategy(helm_bin: Path) -> None:
    assert "TradingStrategy" not in kinds(render(helm_bin))
    manifests = render(helm_bin, "default-strategy.yaml")
    (strategy,) = by_kind(manifests, "TradingStrategy")
    assert strategy["apiVersion"] == "tradebot.dev/v1alpha1"
    assert strategy["metadata"]["name"] == "btc-crossover"
    assert strategy["spec"] == {
        "symbols": ["BTCUSDT", "ETHUSDT"],
        "shortWindow": 12,
        "longWindow": 48,
        "stopLossPct": 2.5,
    }


def test_api_only(helm_bin: Path) -> None:
    manifests = render(helm_bin, "api-only.yaml")
    assert {component(w) for w in workloads(manifests)} == {"api"}
    assert {component(s) for s in by_kind(manifests, "Service")} == {"api"}
    assert "ClusterRole" not in kinds(manifests)
    assert {component(p) for p in by_kind(manifests, "PodDisruptionBudget")} == {"api"}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        pytest.param(("--set", "api.replicaCount=two"), "replicaCount", id="replicaCount-not-integer"),
        pytest.param(("--set", "replicas=2"), "replicas", id="unknown-top-level-key"),
        pytest.param(("--set", "image.pullPolicy=Sometimes"), "pullPolicy", id="bad-pullPolicy"),
        pytest.param(("--set", "feed.source=nyse"), "source", id="bad-feed-source"),
        pytest.param(("--set", "kafka.enabled=maybe"), "enabled", id="bool-not-string"),
        # issue 13.2: a second executor would share the transactional id and fence the first.
        pytest.param(("--set", "executor.replicaCount=2"), "executor", id="executor-replicaCount-2"),
    ],
)
def test_schema_rejects_bad_values(helm_bin: Path, args: tuple[str, ...], field: str) -> None:
    result = helm(helm_bin, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0, f"helm accepted {args}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


def test_required_external_endpoints(helm_bin: Path) -> None:
    result = helm(helm_bin, "template", RELEASE, str(CHART), "--set", "kafka.enabled=false")
    assert result.returncode != 0
    assert "externalKafka.bootstrap" in result.stderr
    result = helm(helm_bin, "template", RELEASE, str(CHART), "--set", "redis.enabled=false")
    assert result.returncode != 0
    assert "externalRedis.url" in result.stderr


def test_redis_has_a_memory_bound_that_does_not_evict(helm_bin: Path) -> None:
    """Issue 13.7: Redis stops at `maxmemory` (writes fail, retried) instead of growing to the container's
    limit (OOM-killed) or evicting the projection's applied offset (which would double fills in the view)."""
    redis = pod_spec(find(render(helm_bin), "StatefulSet", "redis"))["containers"][0]
    assert "--maxmemory 200mb --maxmemory-policy noeviction" in redis["args"][0]


def test_uninstall_hook_deletes_the_release_strategies_before_the_operator_goes(helm_bin: Path) -> None:
    """kopf's finalizer on the chart's TradingStrategy is removed only by the running operator: a pre-delete
    hook Job deletes the release's TradingStrategies (and waits) before Helm deletes the operator."""
    manifests = render(helm_bin, "default-strategy.yaml")
    hook = [m for m in manifests if m["metadata"].get("annotations", {}).get("helm.sh/hook")]
    assert {m["kind"] for m in hook} == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    for manifest in hook:
        annotations = manifest["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete", manifest["metadata"]["name"]
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    weight = {m["kind"]: int(m["metadata"]["annotations"]["helm.sh/hook-weight"]) for m in hook}
    # Its RBAC exists before the Job starts.
    assert weight["ServiceAccount"] < weight["Job"]
    assert weight["Role"] < weight["Job"]
    assert weight["RoleBinding"] < weight["Job"]
    job = find(manifests, "Job", "uninstall")
    spec = pod_spec(job)
    assert spec["serviceAccountName"] == f"{RELEASE}-uninstall"
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["image"] == "ghcr.io/tradebot/tradebot:0.1.0"
    assert container["args"] == [
        "operator",
        "--delete-strategies",
        "--namespace",
        NAMESPACE,
        "--selector",
        f"app.kubernetes.io/instance={RELEASE}",
        "--selector",
        "app.kubernetes.io/name=tradebot",
        "--timeout",
        "120",
    ]
    # The selector matches the chart's own TradingStrategy.
    strategy_labels = by_kind(manifests, "TradingStrategy")[0]["metadata"]["labels"]
    assert strategy_labels["app.kubernetes.io/instance"] == RELEASE
    assert strategy_labels["app.kubernetes.io/name"] == "tradebot"
    role = find(manifests, "Role", "uninstall")
    assert role["rules"] == [
        {"apiGroups": ["tradebot.dev"], "resources": ["tradingstrategies"], "verbs": ["list", "delete"]}
    ]
    binding = find(manifests, "RoleBinding", "uninstall")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-uninstall", "namespace": NAMESPACE}
    ]
    # Without the operator nothing puts the finalizer there, so there is nothing to hook.
    without_operator = render(helm_bin, sets=("operator.enabled=false",))
    assert not [m for m in without_operator if m["metadata"].get("annotations", {}).get("helm.sh/hook")]


def test_a_generated_token_gives_every_pod_template_the_same_config_checksum(helm_bin: Path) -> None:
    # secret.yaml is rendered again for each checksum/config: a token drawn afresh each time made every
    # Deployment's checksum differ from the installed Secret's, so the first `helm upgrade` rolled them all.
    manifests = render(helm_bin)
    checksums = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for d in by_kind(manifests, "Deployment")
    }
    assert len(checksums) >= 5, checksums
    assert len(set(checksums.values())) == 1, checksums


GITOPS_SETS = (
    "existingSecret=tradebot-credentials",
    "operator.sharedEnvExistingSecret=tradebot-strategy-env",
    "redis.auth.enabled=true",
    "operator.watchNamespaces={team-a}",
)


def test_every_credential_can_come_from_an_existing_secret(helm_bin: Path) -> None:
    """Issue 14.5: with existing Secrets the chart renders no Secret, nothing random, the same text each time."""
    first = helm(helm_bin, *template_args(sets=GITOPS_SETS))
    second = helm(helm_bin, *template_args(sets=GITOPS_SETS))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    manifests = [doc for doc in yaml.safe_load_all(first.stdout) if doc]
    assert "Secret" not in kinds(manifests)
    api = pod_spec(find(manifests, "Deployment", "api"))["containers"][0]
    assert env_of(api)["TRADEBOT_API_TOKEN"]["secretKeyRef"] == {
        "name": "tradebot-credentials",
        "key": "api-token",
    }
    assert env_of(api)["TRADEBOT_REDIS_PASSWORD"]["secretKeyRef"] == {
        "name": "tradebot-credentials",
        "key": "redis-password",
    }
    operator = pod_spec(find(manifests, "Deployment", "operator"))["containers"][0]
    assert env_of(operator)["TRADEBOT_OPERATOR_SHARED_ENV_SECRET"] == "tradebot-strategy-env"
    # The operator may read that Secret (to copy it next to strategies elsewhere), by name and nothing else.
    (release_role,) = [
        m
        for m in by_kind(manifests, "Role")
        if m["metadata"]["namespace"] == NAMESPACE and component(m) == "operator"
    ]
    assert release_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["tradebot-strategy-env"],
            "verbs": ["get"],
        }
    ]


def test_without_existing_secrets_the_chart_makes_them(helm_bin: Path) -> None:
    manifests = render(helm_bin, "redis-auth.yaml")
    secrets = {s["metadata"]["name"] for s in by_kind(manifests, "Secret")}
    assert secrets == {RELEASE, f"{RELEASE}-shared-env"}


@pytest.mark.parametrize(
    ("token", "accepted"),
    [("", True), ("x" * 31, False), ("x" * 32, True), ("short", False)],
)
def test_an_inline_api_token_has_at_least_32_characters(helm_bin: Path, token: str, accepted: bool) -> None:
    result = helm(helm_bin, *template_args(sets=(f"apiToken={token}",)))
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert f"/apiToken': minLength: got {len(token)}, want 32" in result.stderr


def test_readme_names_every_credential_source() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in values["existingSecretKeys"]:
        assert f"existingSecretKeys.{key}" in readme, key
    for phrase in ("existingSecret", "operator.sharedEnvExistingSecret", "at least 32 characters", "GitOps"):
        assert phrase in readme, phrase


def _shared_env(manifests: list[Manifest]) -> dict[str, str]:
    secret = next(s for s in by_kind(manifests, "Secret") if s["metadata"]["name"].endswith("-shared-env"))
    data: dict[str, str] = secret["stringData"]
    return data


def test_kafka_sasl_and_redis_tls_reach_every_service_and_the_strategies(helm_bin: Path) -> None:
    """Issue 13.12: a managed Kafka (SASL_SSL) and Redis (TLS): each service and the strategy pods' shared env
    get the protocol, mechanism, user, password (from the Secret) and CAs."""
    manifests = render(helm_bin, "kafka-sasl.yaml")
    values = yaml.safe_load((VALUES_DIR / "kafka-sasl.yaml").read_text())
    kafka, redis = values["externalKafka"], values["externalRedis"]
    credentials = next(s for s in by_kind(manifests, "Secret") if s["metadata"]["name"] == RELEASE)
    assert base64.b64decode(credentials["data"]["kafka-password"]).decode() == kafka["sasl"]["password"]
    for name in ("feed", "executor", "api"):
        env = env_of(pod_spec(find(manifests, "Deployment", name))["containers"][0])
        assert env["TRADEBOT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["TRADEBOT_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["TRADEBOT_KAFKA_SASL_USERNAME"] == "tradebot-services"
        assert env["TRADEBOT_KAFKA_SASL_PASSWORD"]["secretKeyRef"] == {
            "name": RELEASE,
            "key": "kafka-password",
        }
        assert env["TRADEBOT_KAFKA_SSL_CA_PEM"] == kafka["tls"]["ca"]
        assert env["TRADEBOT_REDIS_SSL_CA_PEM"] == redis["tls"]["ca"]
        assert env["TRADEBOT_REDIS_URL"] == redis["url"]
    shared = _shared_env(manifests)
    assert shared["TRADEBOT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert shared["TRADEBOT_KAFKA_SASL_USERNAME"] == "tradebot-services"
    assert shared["TRADEBOT_KAFKA_SASL_PASSWORD"] == kafka["sasl"]["password"]
    assert shared["TRADEBOT_KAFKA_SSL_CA_PEM"] == kafka["tls"]["ca"]
    assert shared["TRADEBOT_REDIS_SSL_CA_PEM"] == redis["tls"]["ca"]
    # The strategy reads every key it is handed, and the settings load (password and CA included).
    read = {f"{ENV_PREFIX}{name.upper()}" for name in StrategySettings.model_fields}
    assert set(shared) <= read, set(shared) - read
    settings = load_settings(
        PipelineSettings, **{key.removeprefix(ENV_PREFIX).lower(): value for key, value in shared.items()}
    )
    assert settings.kafka_client_config()["sasl.password"] == kafka["sasl"]["password"]


def test_kafka_password_and_cas_from_an_existing_secret(helm_bin: Path) -> None:
    sets = (
        "externalKafka.securityProtocol=SASL_SSL",
        "externalKafka.sasl.mechanism=PLAIN",
        "externalKafka.sasl.username=svc",
        "externalKafka.tls.caInSecret=true",
        "externalRedis.tls.caInSecret=true",
        "existingSecretKeys.kafkaPassword=kp",
    )
    manifests = render(helm_bin, "external.yaml", sets=sets)
    for name in ("feed", "executor", "api"):
        env = env_of(pod_spec(find(manifests, "Deployment", name))["containers"][0])
        assert env["TRADEBOT_KAFKA_SASL_MECHANISM"] == "PLAIN"
        assert env["TRADEBOT_KAFKA_SASL_PASSWORD"]["secretKeyRef"] == {
            "name": "tradebot-credentials",
            "key": "kp",
        }
        assert env["TRADEBOT_KAFKA_SSL_CA_PEM"]["secretKeyRef"] == {
            "name": "tradebot-credentials",
            "key": "kafka-ca.crt",
        }
        assert env["TRADEBOT_REDIS_SSL_CA_PEM"]["secretKeyRef"] == {
            "name": "tradebot-credentials",
            "key": "redis-ca.crt",
        }
    # Without a cluster to look the Secret up in, the shared env has the user but no password (as for Redis).
    shared = _shared_env(manifests)
    assert shared["TRADEBOT_KAFKA_SASL_USERNAME"] == "svc"
    assert "TRADEBOT_KAFKA_SASL_PASSWORD" not in shared


def test_plaintext_kafka_adds_no_security_settings(helm_bin: Path) -> None:
    manifests = render(helm_bin)
    env = env_of(pod_spec(find(manifests, "Deployment", "executor"))["containers"][0])
    assert not [name for name in env if "SASL" in name or "SSL" in name or "SECURITY" in name]
    assert not [name for name in _shared_env(manifests) if "SASL" in name or "SSL" in name]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("externalKafka.securityProtocol=SASL_SSL",), "the in-chart broker is PLAINTEXT"),
        (
            (
                "kafka.enabled=false",
                "externalKafka.bootstrap=k:9096",
                "externalKafka.securityProtocol=SASL_SSL",
            ),
            "needs externalKafka.sasl.username",
        ),
        (
            (
                "kafka.enabled=false",
                "externalKafka.bootstrap=k:9096",
                "externalKafka.securityProtocol=SASL_SSL",
                "externalKafka.sasl.username=svc",
            ),
            "externalKafka.sasl.password is empty",
        ),
        (
            ("kafka.enabled=false", "externalKafka.bootstrap=k:9096", "externalKafka.tls.caInSecret=true"),
            "externalKafka.tls.caInSecret reads the CA from existingSecret",
        ),
        (("externalKafka.sasl.mechanism=GSSAPI",), "mechanism"),
    ],
)
def test_kafka_security_values_that_cannot_work_are_refused(
    helm_bin: Path, sets: tuple[str, ...], message: str
) -> None:
    args = [arg for assignment in sets for arg in ("--set", assignment)]
    result = helm(helm_bin, "template", RELEASE, str(CHART), *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_each_service_can_have_its_own_kafka_user(helm_bin: Path) -> None:
    """Issue 14.7: externalKafka.sasl.perService gives a service its own user (and password key), so its ACLs
    can be its own; the others keep the shared user."""
    sets = (
        "externalKafka.sasl.perService.executor.username=executor",
        "externalKafka.sasl.perService.executor.password=ex-pw",
    )
    manifests = render(helm_bin, "kafka-sasl.yaml", sets=sets)
    credentials = next(s for s in by_kind(manifests, "Secret") if s["metadata"]["name"] == RELEASE)
    assert base64.b64decode(credentials["data"]["kafka-password-executor"]).decode() == "ex-pw"
    executor = env_of(pod_spec(find(manifests, "Deployment", "executor"))["containers"][0])
    assert executor["TRADEBOT_KAFKA_SASL_USERNAME"] == "executor"
    assert executor["TRADEBOT_KAFKA_SASL_PASSWORD"]["secretKeyRef"]["key"] == "kafka-password-executor"
    feed = env_of(pod_spec(find(manifests, "Deployment", "feed"))["containers"][0])
    assert feed["TRADEBOT_KAFKA_SASL_USERNAME"] == "tradebot-services"
    assert feed["TRADEBOT_KAFKA_SASL_PASSWORD"]["secretKeyRef"]["key"] == "kafka-password"
    # With existingSecret, the key is looked up there; without a password anywhere, the render says what to set.
    existing = render(
        helm_bin, "external.yaml", sets=(*KAFKA_SASL_SETS, "externalKafka.sasl.perService.api.username=api")
    )
    api = env_of(pod_spec(find(existing, "Deployment", "api"))["containers"][0])
    assert api["TRADEBOT_KAFKA_SASL_PASSWORD"]["secretKeyRef"] == {
        "name": "tradebot-credentials",
        "key": "kafka-password-api",
    }
    result = helm(
        helm_bin,
        *template_args("kafka-sasl.yaml", sets=("externalKafka.sasl.perService.feed.username=feed",)),
    )
    assert result.returncode != 0
    assert "externalKafka.sasl.perService.feed.password is empty" in result.stderr


KAFKA_SASL_SETS = ("externalKafka.securityProtocol=SASL_SSL", "externalKafka.sasl.username=svc")


SINKS_SETS = (
    "notifier.enabled=true",
    "notifier.sinks[0].name=ops",
    "notifier.sinks[0].kind=slack",
    "notifier.sinks[0].url=https://hooks.example/T0/B0/s3cret",
    "notifier.sinks[0].strategies[0]=fast",
)


def test_the_notifier_is_off_by_default_and_refuses_to_run_without_sinks(helm_bin: Path) -> None:
    assert "-notifier" not in render_text(helm_bin)
    refused = helm(helm_bin, *template_args(sets=("notifier.enabled=true",)))
    assert refused.returncode != 0
    assert "notifier.enabled needs notifier.sinks" in refused.stderr
    bad = helm(helm_bin, *template_args(sets=(*SINKS_SETS, "notifier.sinks[0].kind=pager")))
    assert bad.returncode != 0
    assert "kind" in bad.stderr


def test_the_notifier_deployment_its_secret_and_its_egress(helm_bin: Path) -> None:
    manifests = render(helm_bin, sets=SINKS_SETS)
    deployment = find(manifests, "Deployment", "notifier")
    (container,) = pod_spec(deployment)["containers"]
    assert container["args"] == ["notifier"]
    assert [p["name"] for p in container["ports"]] == ["metrics"]
    env = env_of(container)
    # The sinks hold credentials: from the chart's Secret, never inline in the pod spec.
    assert env["TRADEBOT_NOTIFIER_SINKS"]["secretKeyRef"] == {"name": RELEASE, "key": "notifier-sinks"}
    assert "s3cret" not in yaml.safe_dump(deployment)
    (secret,) = [s for s in by_kind(manifests, "Secret") if s["metadata"]["name"] == RELEASE]
    sinks = json.loads(base64.b64decode(secret["data"]["notifier-sinks"]))
    assert sinks == [
        {"name": "ops", "kind": "slack", "url": "https://hooks.example/T0/B0/s3cret", "strategies": ["fast"]}
    ]
    # What the service reads from that variable is what was given.
    from tradebot.notifier.command import NotifierSettings

    read = load_settings(NotifierSettings, notifier_sinks=sinks)
    assert [(s.name, s.kind, s.strategies) for s in read.notifier_sinks] == [("ops", "slack", ["fast"])]
    assert find(manifests, "Service", "notifier")["spec"]["ports"][0]["name"] == "metrics"
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(manifests, "NetworkPolicy")}
    egress = policies[f"{RELEASE}-notifier"]["egress"]
    to_pods = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in egress
        for peer in rule.get("to", [])
        if "podSelector" in peer
    }
    assert to_pods == {"kafka", "redis"}
    (sinks_rule,) = [rule for rule in egress if any("ipBlock" in peer for peer in rule.get("to", []))]
    assert sinks_rule["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    assert sinks_rule["ports"] == [{"port": 443, "protocol": "TCP"}]
    # Kafka and Redis admit it (only while it runs: the default render above has no such peer).
    for store in (f"{RELEASE}-kafka", f"{RELEASE}-redis"):
        peers = [peer for rule in policies[store]["ingress"] for peer in rule["from"]]
        assert {"app.kubernetes.io/component": "notifier"}.items() <= next(
            p["podSelector"]["matchLabels"]
            for p in peers
            if p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "notifier"
        ).items()


def test_the_notifier_sinks_from_an_existing_secret(helm_bin: Path) -> None:
    manifests = render(helm_bin, sets=(*GITOPS_SETS, "notifier.enabled=true"))
    assert "Secret" not in kinds(manifests)
    container = pod_spec(find(manifests, "Deployment", "notifier"))["containers"][0]
    assert env_of(container)["TRADEBOT_NOTIFIER_SINKS"]["secretKeyRef"] == {
        "name": "tradebot-credentials",
        "key": "notifier-sinks",
    }
