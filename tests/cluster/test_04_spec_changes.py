"""Item 4: a spec change rolls the strategy pod to the new parameters and runs a new backtest; deleting the
resource garbage-collects everything the operator made for it."""

from __future__ import annotations

import json
from typing import Any

from tests.cluster.test_03_examples import backtest_in_status, condition
from tests.plugins._proc import eventually
from tests.plugins.cluster import NAMESPACE, LocalCluster

NAME = "rolling"
RESOURCE = f"""
apiVersion: tradebot.dev/v1alpha1
kind: TradingStrategy
metadata:
  name: {NAME}
spec:
  symbols: [BTCUSDT]
  shortWindow: 5
  longWindow: 20
  backtest:
    dataset:
      path: /opt/tradebot/data/historical_data.csv
"""


def strategy_pods(cluster: LocalCluster) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = cluster.get(
        "pods", "-n", NAMESPACE, "-l", f"tradebot.dev/strategy={NAME},app.kubernetes.io/component=strategy"
    )["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready_pod(cluster: LocalCluster) -> dict[str, Any] | None:
    for pod in strategy_pods(cluster):
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if conditions.get("Ready") == "True":
            return pod
    return None


def running_params(cluster: LocalCluster, pod: dict[str, Any]) -> dict[str, Any]:
    """The parameters the strategy process was started with, read inside its container."""
    name = pod["metadata"]["name"]
    output = cluster.kubectl_ok("exec", "-n", NAMESPACE, name, "--", "printenv", "TRADEBOT_STRATEGY_PARAMS")
    params: dict[str, Any] = json.loads(output)
    return params


def test_spec_change_rolls_and_rebacktests_and_delete_collects(tradebot_release: LocalCluster) -> None:
    cluster = tradebot_release
    cluster.kubectl_ok("apply", "-n", NAMESPACE, "-f", "-", stdin=RESOURCE)
    try:
        first_pod = eventually("the strategy pod Ready", lambda: ready_pod(cluster), 240, 2.0)
        first_params = running_params(cluster, first_pod)
        assert first_params["short_window"] == 5 or first_params.get("shortWindow") == 5, first_params
        first = eventually(
            "the first backtest", lambda: backtest_in_status(cluster, NAME, NAMESPACE), 300, 2.0
        )

        cluster.kubectl_ok(
            "patch",
            "tradingstrategy",
            NAME,
            "-n",
            NAMESPACE,
            "--type=merge",
            "-p",
            '{"spec":{"shortWindow":8}}',
        )

        def rolled() -> dict[str, Any] | None:
            pod = ready_pod(cluster)
            same = pod is not None and pod["metadata"]["uid"] == first_pod["metadata"]["uid"]
            return None if pod is None or same else pod

        second_pod = eventually("the pod rolled to the new spec", rolled, 240, 2.0)
        second_params = running_params(cluster, second_pod)
        assert second_params["short_window"] == 8 or second_params.get("shortWindow") == 8, second_params
        second = eventually(
            "a new backtest",
            lambda: (
                (r := backtest_in_status(cluster, NAME, NAMESPACE)) and r.get("hash") != first["hash"] and r
            ),
            300,
            2.0,
        )
        assert second["jobName"] != first["jobName"]

        def ready_again() -> bool:
            return condition(cluster.get("ts", NAME, "-n", NAMESPACE), "Ready") == "True"

        # Ready follows the Deployment's own status: the new backtest can land before the operator has
        # seen the rollout finish (the old pod still terminating), so it is waited for, not read at once.
        eventually("Ready again once the rollout finished", ready_again, 120, 2.0)
        jobs = cluster.get("jobs", "-n", NAMESPACE, "-l", f"tradebot.dev/strategy={NAME}")["items"]
        assert {job["metadata"]["name"] for job in jobs} >= {first["jobName"], second["jobName"]}
    finally:
        cluster.kubectl("delete", "tradingstrategy", NAME, "-n", NAMESPACE, "--ignore-not-found")

    def collected() -> bool:
        left = cluster.kubectl(
            "get", "deployments,configmaps,jobs,pods,secrets", "-n", NAMESPACE, "-l", f"tradebot.dev/strategy={NAME}",
            "-o", "name",
        ).stdout.split()  # fmt: skip
        return not left

    eventually("the Deployment, ConfigMap, Jobs and pods garbage-collected", collected, 180, 2.0)
