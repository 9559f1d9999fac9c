"""Item 6: the chart's NetworkPolicies are enforced on the node (kube-router's firewall): every path the
pipeline needs works, a pod without the pipeline's labels reaches none of Kafka, Redis or the API, and
the simulator cannot reach Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.plugins.cluster import NAMESPACE, LocalCluster, probe_pod, tcp_reachable

# Services by name; probed at their ClusterIP, so a refused DNS lookup cannot pass for a blocked path.
KAFKA = ("tradebot-kafka", 9092)
REDIS = ("tradebot-redis", 6379)
API = ("tradebot-api", 8080)
API_METRICS = ("tradebot-api", 9090)  # /livez, /readyz, /metrics alone, open to metricsFrom (anyone here)
SIMULATOR = ("tradebot-simulator", 6789)
DASHBOARD = ("tradebot-dashboard", 8501)


def reachable(cluster: LocalCluster, pod: str, target: tuple[str, int]) -> bool:
    service, port = target
    ip = cluster.get("service", service, "-n", NAMESPACE)["spec"]["clusterIP"]
    return tcp_reachable(cluster, pod, NAMESPACE, ip, port)


def pod_of(cluster: LocalCluster, component: str) -> str:
    selector = f"app.kubernetes.io/component={component}"
    if component == "strategy":
        selector += ",tradebot.dev/strategy"  # the operator's pods, not a probe labelled like them
    pods = cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
    running = [
        p["metadata"]["name"]
        for p in pods
        if p["status"]["phase"] == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert running, f"no running {component} pod"
    return str(running[0])


@pytest.fixture(scope="module")
def stranger(tradebot_release: LocalCluster) -> Iterator[str]:
    with probe_pod(tradebot_release, "stranger", NAMESPACE) as name:
        yield name


@pytest.fixture(scope="module")
def api_client(tradebot_release: LocalCluster) -> Iterator[str]:
    # The local values admit pods with this label to the API and the dashboard (networkPolicy.ingressFrom).
    with probe_pod(tradebot_release, "api-client", NAMESPACE, {"tradebot.dev/api-client": "true"}) as name:
        yield name


@pytest.mark.parametrize(
    ("component", "target"),
    [
        ("feed", KAFKA), ("feed", SIMULATOR), ("executor", KAFKA), ("executor", REDIS), ("api", REDIS),
        ("dashboard", API), ("strategy", KAFKA), ("strategy", REDIS),
    ],
)  # fmt: skip
def test_the_pipelines_paths_are_open(
    tradebot_release: LocalCluster, component: str, target: tuple[str, int]
) -> None:
    pod = pod_of(tradebot_release, component)
    assert reachable(tradebot_release, pod, target), f"{component} cannot reach {target}"


@pytest.mark.parametrize("target", [KAFKA, REDIS, API, DASHBOARD], ids=["kafka", "redis", "api", "dashboard"])
def test_a_pod_without_the_labels_reaches_nothing(
    tradebot_release: LocalCluster, stranger: str, target: tuple[str, int]
) -> None:
    assert not reachable(tradebot_release, stranger, target)


def test_the_api_s_metrics_port_is_open_to_metrics_from_without_opening_the_api(
    tradebot_release: LocalCluster, stranger: str
) -> None:
    # The local values leave metricsFrom empty (anyone may scrape), yet the API itself stays closed.
    assert reachable(tradebot_release, stranger, API_METRICS)
    assert not reachable(tradebot_release, stranger, API)


def test_an_admitted_client_reaches_the_api_but_not_the_stores(
    tradebot_release: LocalCluster, api_client: str
) -> None:
    assert reachable(tradebot_release, api_client, API)
    assert reachable(tradebot_release, api_client, DASHBOARD)
    assert not reachable(tradebot_release, api_client, REDIS)
    assert not reachable(tradebot_release, api_client, KAFKA)


def test_the_simulator_cannot_reach_redis_or_kafka(tradebot_release: LocalCluster) -> None:
    simulator = pod_of(tradebot_release, "simulator")
    assert not reachable(tradebot_release, simulator, REDIS)
    assert not reachable(tradebot_release, simulator, KAFKA)
