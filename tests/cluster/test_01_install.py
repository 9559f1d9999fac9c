"""Item 1: the chart installed on a real node comes up through its real probes and logs JSON."""

from __future__ import annotations

import json

from tests.plugins.cluster import NAMESPACE, LocalCluster

SERVICES = ("simulator", "feed", "executor", "api", "dashboard", "operator")


def test_every_workload_is_available_and_every_pod_ready(tradebot_release: LocalCluster) -> None:
    deployments = tradebot_release.get("deployments", "-n", NAMESPACE)["items"]
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in deployments}
    assert set(SERVICES) | {"strategy"} <= components, components
    for deployment in deployments:
        name, status = deployment["metadata"]["name"], deployment["status"]
        available = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Available")
        assert available == "True", f"{name}: {status}"
        assert status.get("availableReplicas") == deployment["spec"]["replicas"], f"{name}: {status}"
    for statefulset in tradebot_release.get("statefulsets", "-n", NAMESPACE)["items"]:
        status = statefulset["status"]
        assert status.get("readyReplicas") == statefulset["spec"]["replicas"], statefulset["metadata"]["name"]

    pods = tradebot_release.get("pods", "-n", NAMESPACE)["items"]
    # A pod on its way out (a rollout's old replica) is no longer Ready by design.
    running = [
        p for p in pods if p["status"]["phase"] == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    assert len(running) >= len(SERVICES) + 3  # + kafka, redis, the default strategy
    for pod in running:
        name = pod["metadata"]["name"]
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready.get("Ready") == "True", f"{name}: {pod['status']['conditions']}"
        for container in pod["spec"]["containers"]:
            # Ready came from a real probe the kubelet ran, not from the absence of one.
            assert "readinessProbe" in container, f"{name}/{container['name']} has no readiness probe"
        for container in pod["status"]["containerStatuses"]:
            assert container["ready"], f"{name}/{container['name']}"


def test_every_service_logs_json_lines(tradebot_release: LocalCluster) -> None:
    for component in (*SERVICES, "strategy"):
        logs = tradebot_release.kubectl_ok(
            "logs", "-n", NAMESPACE, "-l", f"app.kubernetes.io/component={component}", "--tail=50"
        )
        lines = [line for line in logs.splitlines() if line.strip()]
        assert lines, f"{component} logged nothing"
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records, f"{component} logged no JSON line:\n{logs[-2000:]}"
        for record in records:
            assert {"ts", "level", "logger", "message"} <= record.keys(), f"{component}: {record}"
        # Streamlit's own start-up banner is the one thing allowed to be plain text (dashboard only).
        plain = [line for line in lines if not line.startswith("{")]
        if component != "dashboard":
            assert not plain, f"{component} logged plain text: {plain[:5]}"
