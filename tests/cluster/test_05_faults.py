"""Item 5: faults on the cluster while trading. The executor and strategy pods are deleted and the operator
restarted; afterwards every order on `orders` has exactly one record on `fills` (read with kcat, an
independent client, inside the cluster), and the operator makes no API write while nothing changes."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.cluster.conftest import http_get, service_url
from tests.plugins._proc import eventually
from tests.plugins.cluster import NAMESPACE, LocalCluster, probe_pod
from tradebot.adapters.topics import FillRecord

KAFKA = f"tradebot-kafka.{NAMESPACE}.svc:9092"


@pytest.fixture(scope="module")
def kcat_pod(tradebot_release: LocalCluster) -> Iterator[str]:
    # Labelled like a strategy pod: the chart's policies let those (and only the pipeline's pods) reach Kafka.
    with probe_pod(
        tradebot_release, "kafka-reader", NAMESPACE,
        {"app.kubernetes.io/part-of": "tradebot", "app.kubernetes.io/component": "strategy"},
    ) as name:  # fmt: skip
        yield name


def read_topic(cluster: LocalCluster, pod: str, topic: str) -> list[dict[str, object]]:
    """Every committed record of `topic`, from the beginning, as parsed JSON."""
    output = cluster.kubectl_ok(
        "exec", "-n", NAMESPACE, pod, "--", "kcat", "-b", KAFKA, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
        "-X", "isolation.level=read_committed", "-f", "%s\\n",
        timeout=180,
    )  # fmt: skip
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def operator_writes(cluster: LocalCluster) -> float:
    """tradebot_operator_api_writes_total, summed over its labels, from the operator's /metrics."""
    status, body = http_get(f"{service_url(cluster, 'operator')}/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("tradebot_operator_api_writes_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def all_available(cluster: LocalCluster) -> bool:
    for deployment in cluster.get("deployments", "-n", NAMESPACE)["items"]:
        status = deployment["status"]
        if status.get("updatedReplicas") != deployment["spec"]["replicas"]:
            return False
        if status.get("availableReplicas", 0) != deployment["spec"]["replicas"]:
            return False
        if status.get("replicas") != deployment["spec"]["replicas"]:  # old pods still terminating
            return False
    return True


def fill_count(cluster: LocalCluster) -> int:
    status, body = http_get(f"{service_url(cluster, 'api')}/fills?strategy=default&limit=1000")
    return len(json.loads(body)["items"]) if status == 200 else 0


def test_every_order_has_exactly_one_fill_after_faults(tradebot_release: LocalCluster, kcat_pod: str) -> None:
    cluster = tradebot_release
    eventually("the default strategy trading", lambda: fill_count(cluster) > 0, 300, 2.0)

    cluster.kubectl_ok("delete", "pod", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=executor")
    cluster.kubectl_ok(
        "delete",
        "pod",
        "-n",
        NAMESPACE,
        "-l",
        "tradebot.dev/strategy=default,app.kubernetes.io/component=strategy",
    )
    cluster.kubectl_ok("rollout", "restart", "-n", NAMESPACE, "deployment/tradebot-operator")
    eventually("every Deployment available again", lambda: all_available(cluster), 300, 2.0)
    before = fill_count(cluster)
    eventually("fills after the faults", lambda: fill_count(cluster) > before, 300, 2.0)

    # Stop the ticks, so the order log stops growing, and let the executor answer what is in flight.
    cluster.kubectl_ok("scale", "-n", NAMESPACE, "deployment/tradebot-feed", "--replicas=0")
    try:

        def settled() -> tuple[list[str], list[str]] | None:
            orders = [str(o["id"]) for o in read_topic(cluster, kcat_pod, "orders")]
            # A value on `fills` is a FillRecord: {"order", "fill", "position"}.
            fills = [
                # From its JSON, as the services decode it (strict enums and datetimes from strings).
                str(FillRecord.model_validate_json(json.dumps(f)).fill.order_id)
                for f in read_topic(cluster, kcat_pod, "fills")
            ]
            return (orders, fills) if orders and set(orders) <= set(fills) else None

        orders, fills = eventually("a fill for every order", settled, 180, 3.0)
        duplicated_orders = [oid for oid, n in Counter(orders).items() if n > 1]
        duplicated_fills = [oid for oid, n in Counter(fills).items() if n > 1]
        assert not duplicated_orders, duplicated_orders[:10]
        assert not duplicated_fills, duplicated_fills[:10]
        assert set(fills) == set(orders), sorted(set(fills) ^ set(orders))[:10]
    finally:
        cluster.kubectl_ok("scale", "-n", NAMESPACE, "deployment/tradebot-feed", "--replicas=1")


def test_idle_operator_makes_no_writes(tradebot_release: LocalCluster) -> None:
    cluster = tradebot_release
    eventually("every Deployment available", lambda: all_available(cluster), 300, 2.0)
    eventually("the default strategy Ready", lambda: cluster.kubectl(
        "wait", "-n", NAMESPACE, "--for=condition=Ready", "ts/default", "--timeout=5s").returncode == 0, 120)  # fmt: skip
    first = operator_writes(cluster)
    time.sleep(30)  # a quiet spell: the operator's periodic work and watches run, nothing changes
    assert operator_writes(cluster) == first
