from __future__ import annotations

import json
from typing import Any

import pytest

from tradebot.operator import status
from tradebot.operator.status import BacktestJob, BacktestPod, Condition


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    first = status.set_condition(
        None, Condition("Ready", False, "Unavailable", "0/1"), generation=1, now="t1"
    )
    same = status.set_condition(
        first, Condition("Ready", False, "Unavailable", "0/1 still"), generation=2, now="t2"
    )
    flipped = status.set_condition(same, Condition("Ready", True, "Available", "1/1"), generation=2, now="t3")
    assert first[0]["lastTransitionTime"] == "t1"
    assert same[0]["lastTransitionTime"] == "t1"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0] == {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "1/1",
        "lastTransitionTime": "t3",
        "observedGeneration": 2,
    }


def test_conditions_of_other_types_are_kept_and_unknown_is_expressible() -> None:
    ready = status.set_condition(None, Condition("Ready", True, "A", ""), generation=1, now="t")
    both = status.set_condition(ready, status.backtest_running("job-1"), generation=1, now="t")
    assert [c["type"] for c in both] == ["Ready", "BacktestSucceeded"]
    assert both[1]["status"] == "Unknown"
    assert status.condition_of({"status": {"conditions": both}}, "BacktestSucceeded") == both[1]
    assert status.condition_of({}, "Ready") is None


@pytest.mark.parametrize(
    ("deployment", "suspended", "expected"),
    [
        (None, False, (False, "DeploymentMissing")),
        ({"spec": {"replicas": 1}, "metadata": {"generation": 1}, "status": {}}, True, (False, "Suspended")),
        (
            {"spec": {"replicas": 2}, "metadata": {"generation": 3}, "status": {"observedGeneration": 2}},
            False,
            (False, "RolloutPending"),
        ),
        ({"spec": {"replicas": 1}, "metadata": {"generation": 1}}, False, (False, "Unavailable")),
        (
            {"spec": {"replicas": 0}, "metadata": {"generation": 1}, "status": {}},
            False,
            (False, "Unavailable"),
        ),
        (
            {
                "spec": {"replicas": 2},
                "metadata": {"generation": 3},
                "status": {"observedGeneration": 3, "availableReplicas": 1, "updatedReplicas": 2},
            },
            False,
            (False, "Unavailable"),
        ),
        (
            {
                "spec": {"replicas": 2},
                "metadata": {"generation": 3},
                "status": {"observedGeneration": 3, "availableReplicas": 2, "updatedReplicas": 2},
            },
            False,
            (True, "Available"),
        ),
    ],
)
def test_deployment_readiness(
    deployment: dict[str, object] | None, suspended: bool, expected: tuple[bool, str]
) -> None:
    condition = status.deployment_readiness(deployment, suspended=suspended)
    assert condition.type == "Ready"
    assert (condition.status, condition.reason) == expected


def test_backtest_result_keeps_the_key_metrics_only() -> None:
    message = json.dumps({"stats": {"total_return_pct": 12.5, "sharpe": 1.1, "n_trades": 7, "other": 1}})
    assert status.parse_backtest_result(message) == {"total_return_pct": 12.5, "sharpe": 1.1, "n_trades": 7}


@pytest.mark.parametrize(("message", "error"), [("not json", "not JSON"), ('{"trades": []}', "no 'stats'")])
def test_backtest_result_errors_say_what_is_wrong(message: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        status.parse_backtest_result(message)


def test_job_failure_reads_the_failed_condition() -> None:
    job = {
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m"}
            ]
        }
    }
    assert status.job_failure(job) == Condition("BacktestSucceeded", False, "BackoffLimitExceeded", "m")
    assert status.job_failure({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) is None


def test_terminated_state_of_the_backtest_container() -> None:
    pod = {"status": {"containerStatuses": [{"name": "backtest", "state": {"terminated": {"exitCode": 0}}}]}}
    assert status.terminated_state(pod) == {"exitCode": 0}
    assert status.terminated_state({"status": {}}) is None


STRATEGY_UID = "uid-strategy"


def _job(digest: str, failure: Condition | None = None, *, owner_uid: str = STRATEGY_UID) -> BacktestJob:
    return BacktestJob(
        f"job-{digest}",
        f"uid-job-{digest}",
        digest,
        failure,
        owner_kind="TradingStrategy",
        owner_uid=owner_uid,
    )


def _pod(
    name: str, digest: str, exit_code: int | None, message: str = "", finished: str = "", *, job_uid: str = ""
) -> BacktestPod:
    terminated = (
        None if exit_code is None else {"exitCode": exit_code, "message": message, "finishedAt": finished}
    )
    return BacktestPod(
        name=name,
        job=f"job-{digest}",
        job_uid=job_uid or f"uid-job-{digest}",
        digest=digest,
        terminated=terminated,
    )


RESULT = json.dumps({"stats": {"total_return_pct": 12.5, "n_trades": 8, "bars": 2}})
OWNERS = {STRATEGY_UID}


def test_backtest_outcome_of_a_success_is_the_result() -> None:
    pods = [
        _pod("a", "h1", 2, "first try failed", "2024-01-01T00:00:01Z"),
        _pod("b", "h1", 0, RESULT, "2024-01-01T00:00:05Z"),
        _pod("c", "h0", 2, "an older spec's run", "2024-01-01T00:00:09Z"),
    ]
    outcome = status.backtest_outcome("h1", pods, [_job("h1"), _job("h0")], OWNERS)
    assert outcome is not None
    assert (outcome.condition.status, outcome.condition.reason) == (True, "Completed")
    assert outcome.result == {
        "jobName": "job-h1",
        "hash": "h1",
        "finishedAt": "2024-01-01T00:00:05Z",
        "totalReturnPct": 12.5,
        "nTrades": 8,
    }


def test_backtest_outcome_of_failures_says_why_and_ignores_other_specs() -> None:
    failed_job = _job("h1", Condition("BacktestSucceeded", False, "DeadlineExceeded", "late"))
    assert status.backtest_outcome("h1", [_pod("a", "h1", None)], [_job("h1")], OWNERS) is None
    by_job = status.backtest_outcome("h1", [_pod("a", "h1", None)], [failed_job], OWNERS)
    assert by_job is not None
    assert by_job.condition == failed_job.failure
    by_pod = status.backtest_outcome("h1", [_pod("a", "h1", 2, "holds 1 bar(s)")], [failed_job], OWNERS)
    assert by_pod is not None
    assert (by_pod.condition.status, by_pod.condition.reason) == (False, "BacktestFailed")
    assert by_pod.condition.message == "holds 1 bar(s)"
    invalid = status.backtest_outcome("h1", [_pod("a", "h1", 0, "not json")], [_job("h1")], OWNERS)
    assert invalid is not None
    assert (invalid.condition.reason, invalid.result) == ("InvalidResult", None)
    assert status.backtest_outcome("h2", [_pod("a", "h1", 0, RESULT)], [failed_job], OWNERS) is None


def test_backtest_outcome_trusts_only_pods_of_jobs_the_strategy_controls() -> None:
    """Issue 14.8: labels are anyone's to copy; owner references chain a result to the TradingStrategy."""
    later = "2024-01-01T00:00:09Z"
    forged = RESULT.replace("12.5", "999.0")
    # A pod with the right labels but no Job controlling it (or a Job nobody we trust controls).
    orphan = _pod("forged", "h1", 0, forged, later, job_uid="none")
    rogue_job = _job("h1", owner_uid="uid-someone-else")
    under_rogue = BacktestPod(
        "forged2", rogue_job.name, "uid-rogue", "h1", {"exitCode": 0, "message": forged}
    )
    rogue_job = BacktestJob(rogue_job.name, "uid-rogue", "h1", None, "TradingStrategy", "uid-someone-else")
    assert status.backtest_outcome("h1", [orphan, under_rogue], [_job("h1"), rogue_job], OWNERS) is None
    # Its failure cannot speak for the strategy either.
    failing_rogue = BacktestJob(
        "j", "uid-r", "h1", Condition("BacktestSucceeded", False, "X", "no"), "Job", "x"
    )
    assert status.backtest_outcome("h1", [], [failing_rogue], OWNERS) is None
    # The real one wins even though the forged pods finished later.
    real = _pod("real", "h1", 0, RESULT, "2024-01-01T00:00:05Z")
    outcome = status.backtest_outcome("h1", [orphan, under_rogue, real], [_job("h1"), rogue_job], OWNERS)
    assert outcome is not None
    assert outcome.result is not None
    assert outcome.result["totalReturnPct"] == 12.5
    # A scheduled backtest's Job is controlled by the strategy's CronJob: trusted once that uid is.
    by_cron = BacktestJob("nightly-1", "uid-job-h1", "h1", None, "CronJob", "uid-cron")
    assert status.backtest_outcome("h1", [real], [by_cron], OWNERS) is None
    assert status.backtest_outcome("h1", [real], [by_cron], {STRATEGY_UID, "uid-cron"}) is not None


def test_index_records_of_pods_and_jobs() -> None:
    """The Job of a pod is its controller owner reference, not its job-name label."""
    owner = {"kind": "Job", "name": "j", "uid": "uid-j", "controller": True, "apiVersion": "batch/v1"}
    pod: dict[str, Any] = {
        "metadata": {
            "name": "p",
            "labels": {"job-name": "forged", "tradebot.dev/backtest-hash": "h"},
            "ownerReferences": [owner],
        },
        "status": {"containerStatuses": [{"name": "backtest", "state": {"terminated": {"exitCode": 0}}}]},
    }
    assert BacktestPod.of(pod, "tradebot.dev/backtest-hash") == BacktestPod(
        "p", "j", "uid-j", "h", {"exitCode": 0}
    )
    unowned = {**pod, "metadata": {**pod["metadata"], "ownerReferences": [{**owner, "controller": False}]}}
    assert BacktestPod.of(unowned, "tradebot.dev/backtest-hash").job_uid is None
    strategy = {"kind": "TradingStrategy", "name": "s", "uid": "uid-s", "controller": True}
    job = {
        "metadata": {
            "name": "j",
            "uid": "uid-j",
            "labels": {"tradebot.dev/backtest-hash": "h"},
            "ownerReferences": [strategy],
        },
        "status": {},
    }
    assert BacktestJob.of(job, "tradebot.dev/backtest-hash") == BacktestJob(
        "j", "uid-j", "h", None, "TradingStrategy", "uid-s"
    )


def test_a_new_deployment_reads_as_it_will_once_its_controller_reports() -> None:
    """The reconcile handler writes Ready from the Deployment it just created; the controller's first reports
    (observed, then a ReplicaSet's pod updated, none available) must not change the condition, or each one
    is another status write (issue 17.7: at most 3 writes a resource)."""
    created = {"spec": {"replicas": 1}, "metadata": {"generation": 1}}
    reports = [
        {**created, "status": {"observedGeneration": 1}},
        {**created, "status": {"observedGeneration": 1, "updatedReplicas": 1, "replicas": 1}},
    ]
    first = status.deployment_readiness(created, suspended=False)
    assert [status.deployment_readiness(d, suspended=False) for d in reports] == [first, first]
    available = {**created, "status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1}}
    assert status.deployment_readiness(available, suspended=False).status is True
