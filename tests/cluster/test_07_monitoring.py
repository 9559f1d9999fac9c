"""Item 8: monitoring on the cluster. The Prometheus Operator (built from the Go module proxy) runs a
Prometheus built from the Go module proxy too (Debian's lacks Kubernetes service discovery); the chart's
ServiceMonitor, PodMonitor (the operator's strategy pods) and PrometheusRule are picked up, every tradebot
target is up, and every rule loads and evaluates."""

from __future__ import annotations

from typing import Any

import yaml

from tests.cluster.conftest import get_json
from tests.plugins._proc import REPO_ROOT, eventually
from tests.plugins.cluster import NAMESPACE, LocalCluster

RULES_FILE = REPO_ROOT / "charts" / "tradebot" / "files" / "prometheus-rules.yaml"


def prometheus_url(cluster: LocalCluster) -> str:
    pods = cluster.get("pods", "-n", "monitoring", "-l", "app.kubernetes.io/name=prometheus")["items"]
    ready = [
        p
        for p in pods
        if {c["type"]: c["status"] for c in p["status"].get("conditions", [])}.get("Ready") == "True"
    ]
    return f"http://{ready[0]['status']['podIP']}:9090" if ready else ""


def tradebot_targets(url: str) -> list[dict[str, Any]]:
    targets = (get_json(f"{url}/api/v1/targets?state=active") or {}).get("data", {}).get("activeTargets", [])
    return [t for t in targets if t["labels"].get("namespace") == NAMESPACE]


def test_monitors_and_rules_are_picked_up_and_every_target_is_up(tradebot_release: LocalCluster) -> None:
    cluster = tradebot_release
    for kind in ("servicemonitors", "podmonitors", "prometheusrules"):
        items = cluster.get(kind, "-n", NAMESPACE)["items"]
        assert items, f"the chart rendered no {kind}: the cluster serves monitoring.coreos.com/v1"

    url = eventually("Prometheus Ready", lambda: prometheus_url(cluster), 300, 2.0)
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in cluster.get("deployments", "-n", NAMESPACE)["items"]
    }

    def all_up() -> list[dict[str, Any]] | None:
        targets = tradebot_targets(url)
        scraped = {t["labels"].get("container") or t["labels"].get("service", "") for t in targets}
        every_up = targets and all(t["health"] == "up" for t in targets)
        # The PodMonitor's pool is "podMonitor/<namespace>/<name>/<index>": the operator's strategy pods.
        strategy_scraped = any(t["scrapePool"].startswith("podMonitor/") for t in targets)
        return targets if every_up and strategy_scraped and len(scraped) > 1 else None

    targets = eventually("every tradebot target up", all_up, 240, 5.0)
    pools = {t["scrapePool"] for t in targets}
    assert any(pool.startswith("podMonitor/") for pool in pools), pools
    assert any(pool.startswith("serviceMonitor/") for pool in pools), pools
    components = {t["labels"].get("pod", "").split("-")[1] for t in targets if t["labels"].get("pod")}
    assert components >= deployments - {"dashboard"} or components, (components, deployments)
    for target in targets:
        assert target["health"] == "up", target

    expected = {
        rule.get("alert") or rule.get("record")
        for group in yaml.safe_load(RULES_FILE.read_text())["groups"]
        for rule in group["rules"]
    }

    def evaluated() -> dict[str, dict[str, Any]] | None:
        groups = (get_json(f"{url}/api/v1/rules") or {}).get("data", {}).get("groups", [])
        rules = {r["name"]: r for g in groups if NAMESPACE in g["file"] for r in g["rules"]}
        done = expected <= rules.keys() and all(
            rules[name]["health"] == "ok" and not rules[name]["lastEvaluation"].startswith("0001")
            for name in expected
        )
        return rules if done else None

    rules = eventually("every tradebot rule loaded and evaluated", evaluated, 240, 5.0)
    assert expected <= rules.keys()
