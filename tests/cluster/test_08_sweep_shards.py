"""Issue 17.3: a sweep too big for one machine, as one Indexed Job on the real node. The shards of the example
backtest-sweep.yaml run `tradebot sweep --shard-count`, and the operator merges them into status.sweep (from
their termination messages) and the full table into the ConfigMap `<name>-sweep` (from the pods' logs, the one
thing the API-server-only tests cannot show): the same as one `tradebot sweep` of the grid on this host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.test_03_examples import DATA, EXAMPLES, condition, namespace_with_prices, run_tradebot
from tests.plugins._proc import eventually
from tests.plugins.cluster import LocalCluster
from tradebot.operator import render, status
from tradebot.operator.spec import TradingStrategySpec

NAMESPACE = "tradebot-sweep"
EXAMPLE = EXAMPLES / "backtest-sweep.yaml"
MANIFEST = yaml.safe_load(EXAMPLE.read_text())
NAME = MANIFEST["metadata"]["name"]
SPEC = TradingStrategySpec.model_validate(MANIFEST["spec"])


@pytest.fixture(scope="module")
def sweep_namespace(tradebot_release: LocalCluster) -> Iterator[LocalCluster]:
    cluster = tradebot_release
    namespace_with_prices(cluster, NAMESPACE)
    cluster.kubectl_ok("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    yield cluster
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300)


def local_sweep(tmp_path: Path) -> tuple[dict[str, Any], str]:
    """One unsharded `tradebot sweep` of the resource's grid on this host: (its --json, its --csv)."""
    assert SPEC.backtest is not None
    args = render.sweep_args(SPEC, SPEC.backtest, str(DATA))
    # The shard's own flags (from --top on) out; the whole grid, ranked, as JSON and CSV instead.
    csv_path = tmp_path / "whole.csv"
    whole = [*args[: args.index("--top")], "--no-progress", "--json", "--csv", str(csv_path)]
    result: dict[str, Any] = json.loads(run_tradebot(whole, timeout=600))
    return result, csv_path.read_text()


def test_the_sweep_runs_as_one_indexed_job_and_matches_one_machine(
    sweep_namespace: LocalCluster, tmp_path: Path
) -> None:
    cluster = sweep_namespace
    assert SPEC.backtest is not None
    assert SPEC.backtest.sweep is not None
    shards = SPEC.backtest.sweep.shards
    job_name = render.sweep_job_name(NAME, render.sweep_hash(SPEC))
    resource = eventually(
        f"{NAME}'s SweepSucceeded=True",
        lambda: (
            (r := cluster.get("ts", NAME, "-n", NAMESPACE))
            and condition(r, status.SWEEP_SUCCEEDED) == "True"
            and r
        ),
        600,
        3.0,
    )
    # The operator reads the shards' pods, which can finish before the Job controller counts them.
    job = eventually(
        f"{job_name} counting {shards} succeeded",
        lambda: (
            (j := cluster.get("job", job_name, "-n", NAMESPACE))["status"].get("succeeded") == shards and j
        ),
        120,
        2.0,
    )
    assert job["spec"]["completionMode"] == "Indexed"
    pods = cluster.get("pods", "-n", NAMESPACE, "-l", f"job-name={job_name}")["items"]
    indexes = {pod["metadata"]["annotations"][render.COMPLETION_INDEX_ANNOTATION] for pod in pods}
    assert indexes == {str(index) for index in range(shards)}

    whole, whole_csv = local_sweep(tmp_path)
    sweep = resource["status"]["sweep"]
    assert (sweep["jobName"], sweep["shards"], sweep["combinations"]) == (
        job_name,
        shards,
        whole["combinations"],
    )
    swept = set(SPEC.backtest.sweep.parameters.ranges())
    expected = [status.sweep_row(row, swept) for row in whole["results"][: SPEC.backtest.sweep.top]]
    assert [row["params"] for row in sweep["top"]] == [row["params"] for row in expected]
    for got, want in zip(sweep["top"], expected, strict=True):
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-9)  # --json rounds to 10 digits
    assert sweep["best"] == sweep["top"][0]
    succeeded = next(c for c in resource["status"]["conditions"] if c["type"] == status.SWEEP_SUCCEEDED)
    assert succeeded["reason"] == "Completed", succeeded["message"]

    # The full table, merged from the shards' logs: byte for byte `tradebot sweep --csv` on this host.
    assert sweep["configMap"] == render.sweep_configmap_name(NAME)
    configmap = cluster.get("configmap", sweep["configMap"], "-n", NAMESPACE)
    assert configmap["data"][render.SWEEP_TABLE_KEY] == whole_csv
    assert configmap["data"]["hash"] == render.sweep_hash(SPEC)
    (owner,) = configmap["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("TradingStrategy", resource["metadata"]["uid"])
