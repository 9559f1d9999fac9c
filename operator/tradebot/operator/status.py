"""Status conditions and results, as pure functions over plain dicts (what the API server stores)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

READY = "Ready"
BACKTEST_SUCCEEDED = "BacktestSucceeded"
# The backtest figures worth a printer column or a glance; the full result stays in the Job's pod.
BACKTEST_METRICS = (
    "total_return_pct",
    "sharpe",
    "max_drawdown_pct",
    "win_rate_pct",
    "n_trades",
    "buy_hold_return_pct",
    "equity_final",
)


def to_camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.capitalize() for part in rest)


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Upsert one condition; lastTransitionTime moves only when the status flips (Kubernetes convention)."""
    wanted = "Unknown" if status is None else "True" if status else "False"
    result: list[dict[str, Any]] = []
    found = False
    for condition in conditions or ():
        if condition.get("type") != type_:
            result.append(dict(condition))
            continue
        found = True
        transition = condition.get("lastTransitionTime") if condition.get("status") == wanted else now
        result.append(
            {
                "type": type_,
                "status": wanted,
                "reason": reason,
                "message": message,
                "lastTransitionTime": transition or now,
                "observedGeneration": generation,
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": wanted,
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
                "observedGeneration": generation,
            }
        )
    return result


def deployment_readiness(deployment: Mapping[str, Any] | None, *, suspended: bool) -> tuple[bool, str, str]:
    """Ready from the Deployment's real availability: (ready, reason, message)."""
    if suspended:
        return False, "Suspended", "spec.suspend is true: the strategy is scaled to zero"
    if deployment is None:
        return False, "DeploymentMissing", "the strategy Deployment does not exist yet"
    want = int(deployment.get("spec", {}).get("replicas", 1) or 0)
    status = deployment.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = int(deployment.get("metadata", {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return False, "RolloutPending", "the Deployment controller has not seen the newest spec yet"
    if available >= want and updated >= want:
        return True, "Available", f"{available}/{want} replicas available"
    return False, "Unavailable", f"{available}/{want} replicas available, {updated} updated"


def parse_backtest_result(message: str) -> dict[str, Any]:
    """The `stats` object the backtest container wrote as its termination message; ValueError if malformed."""
    try:
        payload = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ValueError(f"backtest result is not JSON: {exc.msg} at position {exc.pos}") from exc
    stats = payload.get("stats") if isinstance(payload, dict) else None
    if not isinstance(stats, dict):
        raise ValueError("backtest result has no 'stats' object")
    return {key: stats[key] for key in BACKTEST_METRICS if key in stats}


def terminated_state(pod: Mapping[str, Any], container: str = "backtest") -> Mapping[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == container:
            terminated = (status.get("state") or {}).get("terminated")
            return terminated if isinstance(terminated, Mapping) else None
    return None


def job_failure(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when the Job has failed for good, else None."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return str(condition.get("reason") or "JobFailed"), str(
                condition.get("message") or "the Job failed"
            )
    return None
