from __future__ import annotations

import json

import pytest

from tradebot.operator import status


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    first = status.set_condition(
        None, type_="Ready", status=False, reason="Unavailable", message="0/1", generation=1, now="t1"
    )
    same = status.set_condition(
        first, type_="Ready", status=False, reason="Unavailable", message="0/1 still", generation=2, now="t2"
    )
    flipped = status.set_condition(
        same, type_="Ready", status=True, reason="Available", message="1/1", generation=2, now="t3"
    )
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
    ready = status.set_condition(
        None, type_="Ready", status=True, reason="A", message="", generation=1, now="t"
    )
    both = status.set_condition(
        ready, type_="BacktestSucceeded", status=None, reason="Running", message="", generation=1, now="t"
    )
    assert [c["type"] for c in both] == ["Ready", "BacktestSucceeded"]
    assert both[1]["status"] == "Unknown"


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
    ready, reason, _ = status.deployment_readiness(deployment, suspended=suspended)
    assert (ready, reason) == expected


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
    assert status.job_failure(job) == ("BackoffLimitExceeded", "m")
    assert status.job_failure({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) is None


def test_terminated_state_of_the_backtest_container() -> None:
    pod = {"status": {"containerStatuses": [{"name": "backtest", "state": {"terminated": {"exitCode": 0}}}]}}
    assert status.terminated_state(pod) == {"exitCode": 0}
    assert status.terminated_state({"status": {}}) is None
