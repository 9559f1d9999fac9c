"""Issue 17.3: a TradingStrategy's backtest.sweep as one Indexed Job whose pods each run a slice of the grid.

- the merge: the rendered shard arguments run through the real `tradebot sweep`, merged as the operator
  merges them (status.sweep_outcome, the ConfigMap's table), equal one unsharded `tradebot sweep`;
- the spec: the model refuses what the CRD refuses, with the same words;
- on a real API server (no kubelet: the test plays it): the operator's Indexed Job (fields, ownership,
  hardening, limits) and the shards' results merged into the status, a forged pod ignored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.backtest.test_sweep_shards import WIDEST_ROW
from tests.operator.test_operator_e2e import _apply, _condition, _terminate_pod
from tests.plugins._proc import REPO_ROOT, eventually
from tests.plugins.kube import KubeCluster
from tests.plugins.tradebot_operator import Operator, get_json, kubectl_ok
from tradebot.cli import main
from tradebot.core import shards
from tradebot.operator import render, status
from tradebot.operator.spec import TradingStrategySpec

SAMPLE = REPO_ROOT / "data" / "historical_data.csv"
IMAGE_DATA = "/opt/tradebot/data/historical_data.csv"  # in the image
SHARDS = 3


def _manifest(name: str, *, shards: int = SHARDS) -> dict[str, Any]:
    return {
        "apiVersion": "tradebot.dev/v1alpha1",
        "kind": "TradingStrategy",
        "metadata": {"name": name},
        "spec": {
            "symbols": ["GOOG"],
            "shortWindow": 10,
            "longWindow": 40,
            "stopLossPct": 5,
            "backtest": {
                "dataset": {"path": IMAGE_DATA},
                "commissionPct": 0.1,
                "sweep": {
                    "parameters": {
                        "shortWindow": {"from": 5, "to": 20, "step": 5},
                        "longWindow": {"values": [15, 30, 60]},
                        "stopLossPct": {"from": 2, "to": 4, "step": 2},
                    },
                    "metric": "sharpe",
                    "shards": shards,
                },
            },
        },
    }


def _spec(name: str = "sweeper") -> TradingStrategySpec:
    return TradingStrategySpec.model_validate(_manifest(name)["spec"])


def _run_shard(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    spec: TradingStrategySpec,
    index: int,
    result_file: Path,
) -> tuple[str, str]:
    """One pod of the Indexed Job, as the Job controller starts it ($JOB_COMPLETION_INDEX), with the rendered
    arguments on the sample data: (its termination message, its stdout)."""
    assert spec.backtest is not None
    args = render.sweep_args(spec, spec.backtest, str(SAMPLE))
    args[args.index("--result-file") + 1] = str(result_file)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return result_file.read_text(), out


def _shard_outputs(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    spec: TradingStrategySpec,
) -> list[tuple[str, str]]:
    return [
        _run_shard(capsys, monkeypatch, spec, index, tmp_path / f"{index}.json") for index in range(SHARDS)
    ]


def _unsharded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[dict[str, Any], str]:
    """One `tradebot sweep` of the same grid: (its --json, its --csv)."""
    grid = ("--short-window", "5:20:5", "--long-window", "15,30,60", "--stop-loss-pct", "2:4:2")
    # The resource's timeframe (tick by default), which its shards name, not the CLI's default (auto).
    flags = ("--commission-pct", "0.1", "--metric", "sharpe", "--timeframe", "tick", "--no-progress")
    base = ("--data", str(SAMPLE), *grid, *flags)
    csv_path = tmp_path / "whole.csv"
    assert main(["sweep", *base, "--json", "--csv", str(csv_path)]) == 0
    whole = json.loads(capsys.readouterr().out)
    return whole, csv_path.read_text()


def test_shards_merged_by_the_operator_equal_one_unsharded_sweep(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = _spec()
    whole, whole_csv = _unsharded(capsys, tmp_path)
    outputs = _shard_outputs(capsys, monkeypatch, tmp_path, spec)
    job = status.BacktestJob(
        name="sweeper-sweep-x", uid="job-uid", digest="d", failure=None, owner_uid="ts-uid"
    )
    pods = [
        status.BacktestPod(
            name=f"sweeper-sweep-x-{index}",
            job=job.name,
            job_uid=job.uid,
            digest="d",
            terminated={"exitCode": 0, "message": message, "finishedAt": f"2026-01-01T00:00:0{index}Z"},
            completion_index=index,
        )
        for index, (message, _) in enumerate(outputs)
    ]
    swept = {"short_window", "long_window", "stop_loss_pct"}
    outcome = status.sweep_outcome("d", SHARDS, swept, 10, pods, [job], {"ts-uid"})
    assert outcome is not None
    assert outcome.result is not None
    assert outcome.condition.status is True
    result = outcome.result
    assert (result["combinations"], result["invalid"], result["shards"]) == (
        whole["combinations"],
        whole["invalid"],
        SHARDS,
    )
    assert result["completedAt"] == "2026-01-01T00:00:02Z"
    expected_top = [status.sweep_row(row, swept) for row in whole["results"][:10]]
    assert len(result["top"]) == 10
    # Same combinations in the same order; metrics equal (--json rounds to 10 digits).
    assert [row["params"] for row in result["top"]] == [row["params"] for row in expected_top]
    for got, want in zip(result["top"], expected_top, strict=True):
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-9)
    assert result["best"] == result["top"][0]
    # The full table, from the shards' stdout (their logs), is byte for byte `tradebot sweep --csv`.
    merged = shards.merge_rows((shards.parse_table_lines(out) for _, out in outputs), "sharpe")
    assert shards.table_csv(merged) == whole_csv
    configmap = render.render_sweep_configmap(
        "sweeper", "ns", digest="d", metric="sharpe", table_csv=whole_csv
    )
    assert configmap["metadata"]["name"] == "sweeper-sweep"
    assert len(json.dumps(configmap).encode()) < 1024 * 1024

    # A shard missing: still running; one reported by a pod of another Job: not counted.
    assert status.sweep_outcome("d", SHARDS, swept, 10, pods[:-1], [job], {"ts-uid"}) is None
    stranger = status.BacktestPod(**{**pods[-1].__dict__, "job_uid": "another-job"})
    assert status.sweep_outcome("d", SHARDS, swept, 10, [*pods[:-1], stranger], [job], {"ts-uid"}) is None
    # The Job not controlled by the TradingStrategy: nothing counts.
    assert status.sweep_outcome("d", SHARDS, swept, 10, pods, [job], {"other-uid"}) is None


def test_the_largest_grid_fits_the_configmap() -> None:
    """The schema's cap (2000 combinations) keeps the widest full table well inside a ConfigMap's 1 MiB."""
    table = shards.table_csv([WIDEST_ROW] * 2000)
    assert len(table.encode()) < 1024 * 1024 * 0.9


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"parameters": {"shortWindow": {"from": 50, "to": 10, "step": 5}}}, "must not exceed its to"),
        ({"parameters": {"shortWindow": {"from": 5, "to": 10}}}, "needs from, to and step, or values"),
        (
            {"parameters": {"shortWindow": {"from": 5, "to": 10, "step": 1, "values": [5]}}},
            "needs from, to and step, or values",
        ),
        ({"parameters": {}}, "needs at least one parameter"),
        (
            {
                "parameters": {
                    "shortWindow": {"from": 1, "to": 100, "step": 1},
                    "longWindow": {"from": 1, "to": 21, "step": 1},
                }
            },
            "more than 2000 combinations",
        ),
        ({"parameters": {"shortWindow": {"values": [5]}}, "shards": 51}, "less than or equal to 50"),
        ({"parameters": {"shortWindow": {"values": [5]}}, "top": 11}, "less than or equal to 10"),
        (
            {"parameters": {"shortWindow": {"values": [5]}}, "metric": "luck"},
            "metric must be one of sharpe, ",
        ),
    ],
)
def test_the_model_refuses_what_the_crd_refuses(sweep: dict[str, Any], message: str) -> None:
    spec = _manifest("x")["spec"]
    spec["backtest"]["sweep"] = sweep
    with pytest.raises(ValidationError, match=message):
        TradingStrategySpec.model_validate(spec)


def test_a_float_grid_counts_as_the_cli_expands_it() -> None:
    """0.1 to 0.3 by 0.1 is three values (0.3 / 0.1 is 2.9999... in floating point)."""
    spec = _manifest("x")["spec"]
    spec["backtest"]["sweep"] = {"parameters": {"stopLossPct": {"from": 0.1, "to": 0.3, "step": 0.1}}}
    parsed = TradingStrategySpec.model_validate(spec)
    assert parsed.backtest is not None
    assert parsed.backtest.sweep is not None
    assert parsed.backtest.sweep.combinations() == 3


def test_a_sweep_change_reruns_the_sweep_not_the_backtest() -> None:
    spec = _spec()
    changed = _manifest("sweeper")
    changed["spec"]["backtest"]["sweep"]["metric"] = "total_return_pct"
    other = TradingStrategySpec.model_validate(changed["spec"])
    assert render.backtest_hash(other) == render.backtest_hash(spec)
    assert render.sweep_hash(other) != render.sweep_hash(spec)
    # The longest name's Job leaves two digits for the index in each pod's 63-character hostname.
    job = render.render_sweep_job("a" * render.MAX_NAME_LENGTH, "ns", spec, default_image="img")
    assert len(job["metadata"]["name"]) + len("-49") <= 63


@pytest.mark.slow
def test_the_operator_runs_one_indexed_job_and_merges_its_shards(
    kube_apiserver: KubeCluster,
    operator: Operator,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    cluster = kube_apiserver
    # The restricted Pod Security Standard, enforced: the Job controller could not create a pod that breaks it.
    kubectl_ok(cluster, "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    _apply(cluster, namespace, _manifest("sweeper"))
    (job,) = eventually(
        "the sweep Job",
        lambda: (
            get_json(
                cluster,
                "jobs",
                "-n",
                namespace,
                "-l",
                f"app.kubernetes.io/component={render.COMPONENT_SWEEP}",
            )
            or {}
        ).get("items"),
    )
    spec = _spec()
    assert job["metadata"]["name"] == f"sweeper-sweep-{render.sweep_hash(spec)}"
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == (
        "Indexed",
        SHARDS,
        SHARDS,
    )
    (owner,) = job["metadata"]["ownerReferences"]
    resource = get_json(cluster, "ts", "sweeper", "-n", namespace)
    assert resource is not None
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "TradingStrategy",
        resource["metadata"]["uid"],
        True,
    )
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    (container,) = pod_spec["containers"]
    assert container["name"] == "sweep"
    assert container["resources"] == render.DEFAULT_BACKTEST_RESOURCES
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["args"] == render.sweep_args(spec, spec.backtest, IMAGE_DATA)  # type: ignore[arg-type]
    running = eventually(
        "SweepSucceeded=Unknown",
        lambda: _condition(get_json(cluster, "ts", "sweeper", "-n", namespace), "SweepSucceeded"),
    )
    assert running["reason"] == "Running"

    # The Job controller makes one pod per index; the test plays the kubelet with the real shards' results.
    pods = eventually(
        f"{SHARDS} shard pods",
        lambda: (
            (
                items := (
                    get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={job['metadata']['name']}")
                    or {}
                ).get("items")
            )
            and len(items) == SHARDS
            and items
        ),
    )
    by_index = {int(pod["metadata"]["annotations"][render.COMPLETION_INDEX_ANNOTATION]): pod for pod in pods}
    assert sorted(by_index) == list(range(SHARDS))
    outputs = _shard_outputs(capsys, monkeypatch, tmp_path, spec)
    whole, _ = _unsharded(capsys, tmp_path)

    # A forged pod with every label and the index annotation of shard 0, and a better "result": ignored.
    real = by_index[0]["metadata"]
    forged_labels = {
        key: value for key, value in real["labels"].items() if not key.endswith("controller-uid")
    }
    forged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "forged-shard", "labels": forged_labels, "annotations": real["annotations"]},
        "spec": {
            # As restricted as the real one, or the namespace's Pod Security admission refuses it.
            "securityContext": by_index[0]["spec"]["securityContext"],
            "containers": [
                {
                    "name": "sweep",
                    "image": "ghcr.io/tradebot/tradebot:0.1.0",
                    "securityContext": by_index[0]["spec"]["containers"][0]["securityContext"],
                }
            ],
        },
    }
    _apply(cluster, namespace, forged)
    fake = shards.decode_shard_result(outputs[0][0])
    fake_top = [{**row, "sharpe": 999.0} for row in fake.top]
    forged_message = shards.encode_shard_result(shards.ShardResult(**{**fake.__dict__, "top": fake_top}))
    _terminate_pod(cluster, namespace, "forged-shard", exit_code=0, message=forged_message, container="sweep")
    for index in (1, 2):
        name = by_index[index]["metadata"]["name"]
        _terminate_pod(cluster, namespace, name, exit_code=0, message=outputs[index][0], container="sweep")
    # Shards 1 and 2 and the forged "shard 0": still running.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        condition = _condition(get_json(cluster, "ts", "sweeper", "-n", namespace), "SweepSucceeded")
        assert condition is not None
        assert condition["reason"] == "Running"
        time.sleep(0.5)

    _terminate_pod(
        cluster,
        namespace,
        by_index[0]["metadata"]["name"],
        exit_code=0,
        message=outputs[0][0],
        container="sweep",
    )
    done = eventually(
        "SweepSucceeded=True",
        lambda: (
            (r := get_json(cluster, "ts", "sweeper", "-n", namespace))
            and (c := _condition(r, "SweepSucceeded"))
            and c["status"] == "True"
            and r
        ),
    )
    sweep = done["status"]["sweep"]
    assert (sweep["jobName"], sweep["hash"], sweep["shards"]) == (
        job["metadata"]["name"],
        render.sweep_hash(spec),
        SHARDS,
    )
    assert (sweep["combinations"], sweep["invalid"], sweep["metric"]) == (
        whole["combinations"],
        whole["invalid"],
        "sharpe",
    )
    best = whole["results"][0]
    assert sweep["best"]["params"] == {
        "shortWindow": best["short_window"],
        "longWindow": best["long_window"],
        "stopLossPct": best["stop_loss_pct"],
    }
    assert sweep["best"]["metrics"]["sharpe"] == pytest.approx(best["sharpe"], rel=1e-9)
    assert sweep["best"]["metrics"]["sharpe"] < 999
    assert len(sweep["top"]) == 10
    assert [row["params"]["shortWindow"] for row in sweep["top"]] == [
        row["short_window"] for row in whole["results"][:10]
    ]
    # No kubelet serves logs here (the API server answers an empty log): no table of too few rows is written;
    # the full table waits for a real cluster (tests/cluster/test_08_sweep_shards.py).
    condition = _condition(done, "SweepSucceeded")
    assert condition is not None
    assert condition["reason"] == "TableUnavailable"
    assert "full table unavailable: the log of sweeper-sweep-" in condition["message"]
    assert get_json(cluster, "configmap", "sweeper-sweep", "-n", namespace) is None


class _ShardLogs:
    """The three calls `_sweep_table` makes of `Kube`, over logs given by the test: the API server alone has
    no kubelet to serve a pod's log (tests/cluster/test_08_sweep_shards.py reads real ones)."""

    def __init__(self, logs: dict[str, str]) -> None:
        self.logs = logs
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.log_reads: list[str] = []

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        assert (api_version, kind) == ("v1", "ConfigMap")
        return self.configmaps.get(name)

    async def pod_log(self, name: str, namespace: str, container: str) -> str:
        assert container == render.COMPONENT_SWEEP
        self.log_reads.append(name)
        return self.logs[name]

    async def apply_if_changed(self, manifest: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        self.configmaps[manifest["metadata"]["name"]] = manifest
        return True, manifest


async def test_the_full_table_comes_from_the_shards_logs_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tradebot.operator.handlers import _sweep_table

    spec = _spec()
    whole, whole_csv = _unsharded(capsys, tmp_path)
    outputs = _shard_outputs(capsys, monkeypatch, tmp_path, spec)
    pods = [
        status.BacktestPod(f"shard-{i}", "job", "job-uid", "d", {"exitCode": 0, "message": message}, i)
        for i, (message, _) in enumerate(outputs)
    ]
    # A log carries what else the container printed on stderr: skipped.
    logs = {f"shard-{i}": f"a warning\n{out}" for i, (_, out) in enumerate(outputs)}
    owner = {"apiVersion": "tradebot.dev/v1alpha1", "kind": "TradingStrategy"}
    body = {**owner, "metadata": {"name": "sweeper", "namespace": "ns", "uid": "ts-uid"}}
    kube = _ShardLogs(logs)
    assert await _sweep_table(kube, body, "sweeper", "ns", "d", "sharpe", pods) is None  # type: ignore[arg-type]
    configmap = kube.configmaps["sweeper-sweep"]
    assert configmap["data"] == {"hash": "d", "metric": "sharpe", render.SWEEP_TABLE_KEY: whole_csv}
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == "ts-uid"
    assert sorted(kube.log_reads) == ["shard-0", "shard-1", "shard-2"]
    # Written for this spec: the logs are not read again.
    assert await _sweep_table(kube, body, "sweeper", "ns", "d", "sharpe", pods) is None  # type: ignore[arg-type]
    assert len(kube.log_reads) == SHARDS
    # A log that lost rows (rotated, or the pod gone) writes no table and says why.
    short = _ShardLogs({**logs, "shard-1": "\n".join(logs["shard-1"].splitlines()[:-1])})
    problem = await _sweep_table(short, body, "sweeper", "ns", "d", "sharpe", pods)  # type: ignore[arg-type]
    assert problem is not None
    assert problem.startswith("the log of shard-1 has")
    assert short.configmaps == {}
    assert whole["combinations"] == len(whole_csv.splitlines()) - 1
