"""Item 3: every example TradingStrategy on the real node, backtests included, and the invalid ones refused.

The examples are applied in a namespace of their own, not the release's: strategy pods there must still
reach Kafka and Redis (auth on in the local values) with the settings the operator copies next to them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.test_crd import INVALID_MESSAGES
from tests.plugins._proc import REPO_ROOT, eventually
from tests.plugins.cluster import LocalCluster
from tradebot.operator import render, status
from tradebot.operator.spec import TradingStrategySpec

EXAMPLES = REPO_ROOT / "manifests" / "examples"
NAMESPACE = "tradebot-examples"
DATA = REPO_ROOT / "data" / "historical_data.csv"


def condition(resource: dict[str, Any], type_: str) -> str | None:
    for item in (resource.get("status") or {}).get("conditions") or ():
        if item["type"] == type_:
            return str(item["status"])
    return None


def run_tradebot(args: list[str], timeout: float = 300) -> str:
    """`tradebot <args>` on this host, which must succeed: its stdout."""
    run = subprocess.run(
        [sys.executable, "-m", "tradebot.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def local_backtest(spec: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """What `tradebot backtest` on this host says for the resource's parameters and the same data."""
    parsed = TradingStrategySpec.model_validate(spec)
    assert parsed.backtest is not None
    args = render.backtest_args(parsed, parsed.backtest, str(DATA))
    result_file = tmp_path / f"result-{render.backtest_hash(parsed)}.json"
    args[args.index(render.RESULT_PATH)] = str(result_file)
    run_tradebot(args)
    metrics = status.parse_backtest_result(result_file.read_text())
    return {status.to_camel(key): value for key, value in metrics.items()}


def backtest_in_status(cluster: LocalCluster, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    resource = cluster.get("tradingstrategy", name, "-n", namespace)
    result: dict[str, Any] = (resource.get("status") or {}).get("backtest") or {}
    return result


def namespace_with_prices(cluster: LocalCluster, namespace: str) -> None:
    """A namespace for example strategies, with the ConfigMap `prices` their backtests read (key ohlcv.csv)."""
    cluster.kubectl("create", "namespace", namespace)
    eventually(
        "the namespace's default service account",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", namespace).returncode == 0,
        60,
    )
    cluster.kubectl_ok("create", "configmap", "prices", f"--from-file=ohlcv.csv={DATA}", "-n", namespace)


@pytest.fixture(scope="module")
def examples_namespace(tradebot_release: LocalCluster) -> Iterator[LocalCluster]:
    cluster = tradebot_release
    namespace_with_prices(cluster, NAMESPACE)
    for path in sorted(EXAMPLES.glob("*.yaml")):
        cluster.kubectl_ok("apply", "-n", NAMESPACE, "-f", str(path))
    yield cluster
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", timeout=300)


def table_row(header: str, row: str) -> dict[str, str]:
    """kubectl's table row by the header's column positions (an empty cell does not shift the others)."""
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {
        name: row[start:end].strip() for name, start, end in zip(header.split(), starts, ends, strict=True)
    }


@pytest.mark.parametrize("example", [p.name for p in sorted(EXAMPLES.glob("*.yaml"))])
def test_example_runs(examples_namespace: LocalCluster, example: str) -> None:
    cluster = examples_namespace
    manifest = yaml.safe_load((EXAMPLES / example).read_text())
    name, spec = manifest["metadata"]["name"], manifest["spec"]
    if spec.get("suspend"):
        resource = eventually(
            f"{name} reported Suspended",
            lambda: (
                (r := cluster.get("ts", name, "-n", NAMESPACE)) and condition(r, "Ready") == "False" and r
            ),
            120,
        )
        deployment = cluster.get("deployment", f"{name}-strategy", "-n", NAMESPACE)
        assert deployment["spec"]["replicas"] == 0
    else:
        resource = eventually(
            f"{name} Ready",
            lambda: (r := cluster.get("ts", name, "-n", NAMESPACE)) and condition(r, "Ready") == "True" and r,
            240,
            2.0,
        )
        pods = cluster.get(
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            f"tradebot.dev/strategy={name},app.kubernetes.io/component=strategy",
        )["items"]
        assert pods
        for pod in pods:
            ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}.get("Ready")
            assert ready == "True", pod["status"]
    assert resource["status"]["conditions"]

    # `kubectl get ts`: every column that applies is filled.
    table = cluster.kubectl_ok("get", "ts", name, "-n", NAMESPACE)
    header, row = table.splitlines()[:2]
    columns = table_row(header, row)
    assert columns["NAME"] == name
    assert columns["SYMBOLS"].strip("[]\"'")
    assert columns["SHORT"] == str(spec["shortWindow"])
    assert columns["LONG"] == str(spec["longWindow"])
    assert columns["READY"] in ("True", "False")


def test_backtest_from_a_configmap_matches_the_cli(examples_namespace: LocalCluster, tmp_path: Path) -> None:
    cluster = examples_namespace
    spec = yaml.safe_load((EXAMPLES / "backtest-configmap.yaml").read_text())["spec"]
    result = eventually(
        "sma-backtested's backtest in status", lambda: backtest_in_status(cluster, "sma-backtested"), 300, 2.0
    )
    expected = local_backtest(spec, tmp_path)
    assert {key: result.get(key) for key in expected} == expected
    resource = cluster.get("ts", "sma-backtested", "-n", NAMESPACE)
    assert condition(resource, "BacktestSucceeded") == "True"
    row = cluster.kubectl_ok("get", "ts", "sma-backtested", "-n", NAMESPACE, "--no-headers").split()
    assert str(expected["totalReturnPct"]) in row, row


def test_scheduled_backtest_run_once_matches_the_cli(
    examples_namespace: LocalCluster, tmp_path: Path
) -> None:
    cluster = examples_namespace
    spec = yaml.safe_load((EXAMPLES / "backtest-nightly.yaml").read_text())["spec"]
    eventually(
        "the nightly CronJob",
        lambda: cluster.kubectl("get", "cronjob", "ema-nightly-backtest", "-n", NAMESPACE).returncode == 0,
        120,
    )
    cluster.kubectl_ok(
        "create", "job", "ema-nightly-now", "--from=cronjob/ema-nightly-backtest", "-n", NAMESPACE
    )
    cluster.kubectl_ok(
        "wait",
        "--for=condition=complete",
        "job/ema-nightly-now",
        "-n",
        NAMESPACE,
        "--timeout=300s",
        timeout=320,
    )
    result = eventually(
        "ema-nightly's backtest in status", lambda: backtest_in_status(cluster, "ema-nightly"), 120, 2.0
    )
    assert result["jobName"] == "ema-nightly-now"
    expected = local_backtest(spec, tmp_path)
    assert {key: result.get(key) for key in expected} == expected


@pytest.mark.parametrize("example", sorted(INVALID_MESSAGES))
def test_invalid_example_is_refused_with_its_message(tradebot_release: LocalCluster, example: str) -> None:
    result = tradebot_release.kubectl(
        "apply", "--dry-run=server", "-n", "default", "-f", str(EXAMPLES / "invalid" / example)
    )
    assert result.returncode != 0
    assert INVALID_MESSAGES[example] in result.stderr, result.stderr
