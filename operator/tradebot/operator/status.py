"""Status conditions and backtest results: typed decisions, and pure functions over the plain dicts the API
server stores."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tradebot.core import shards as shard_format

READY = "Ready"
BACKTEST_SUCCEEDED = "BacktestSucceeded"
SWEEP_SUCCEEDED = "SweepSucceeded"
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


@dataclass(frozen=True)
class Condition:
    """One of the resource's conditions as the operator decides it; `set_condition` adds the times and the
    generation Kubernetes conditions carry. `status` None is "Unknown"."""

    type: str
    status: bool | None
    reason: str
    message: str

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else "True" if self.status else "False"


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None, condition: Condition, *, generation: int, now: str
) -> list[dict[str, Any]]:
    """Upsert one condition; lastTransitionTime moves only when the status flips (Kubernetes convention)."""
    wanted = condition.status_text

    def stored(transition: str) -> dict[str, Any]:
        return {
            "type": condition.type,
            "status": wanted,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }

    result: list[dict[str, Any]] = []
    found = False
    for current in conditions or ():
        if current.get("type") != condition.type:
            result.append(dict(current))
            continue
        found = True
        kept = current.get("lastTransitionTime") if current.get("status") == wanted else None
        result.append(stored(kept or now))
    if not found:
        result.append(stored(now))
    return result


def condition_of(resource: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The stored condition of `type_` on a resource, if any."""
    for condition in (resource.get("status") or {}).get("conditions") or ():
        if condition.get("type") == type_:
            found: Mapping[str, Any] = condition
            return found
    return None


def deployment_readiness(deployment: Mapping[str, Any] | None, *, suspended: bool) -> Condition:
    """Ready from the Deployment's real availability."""
    if suspended:
        return Condition(READY, False, "Suspended", "spec.suspend is true: the strategy is scaled to zero")
    if deployment is None:
        return Condition(READY, False, "DeploymentMissing", "the strategy Deployment does not exist yet")
    want = int(deployment.get("spec", {}).get("replicas", 1) or 0)
    status = deployment.get("status") or {}
    available = int(status.get("availableReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = int(deployment.get("metadata", {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    # A Deployment just created is unavailable whatever its controller will say next: said so at once, the
    # status is not written again when the controller first reports (issue 17.7: at most 3 writes a resource).
    if observed < generation and observed > 0:
        return Condition(
            READY, False, "RolloutPending", "the Deployment controller has not seen the newest spec yet"
        )
    if observed == generation and available >= want and updated >= want:
        return Condition(READY, True, "Available", f"{available}/{want} replicas available")
    # Without the updated count, which moves through a rollout: one write when availability changes.
    return Condition(READY, False, "Unavailable", f"{available}/{want} replicas available")


def invalid_spec(message: str) -> Condition:
    return Condition(READY, False, "InvalidSpec", message)


def backtest_running(job: str) -> Condition:
    return Condition(BACKTEST_SUCCEEDED, None, "Running", f"backtest Job {job} is running")


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


def job_failure(job: Mapping[str, Any], type_: str = BACKTEST_SUCCEEDED) -> Condition | None:
    """`type_`=False (BacktestSucceeded or SweepSucceeded) with the Job's reason when the Job has failed for
    good, else None."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            reason = str(condition.get("reason") or "JobFailed")
            return Condition(type_, False, reason, str(condition.get("message") or "the Job failed"))
    return None


def controller_of(obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(kind, name, uid) of the object's controller owner reference, if it has one."""
    for reference in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if reference.get("controller") is True:
            return str(reference.get("kind")), str(reference.get("name")), str(reference.get("uid"))
    return None


@dataclass(frozen=True)
class BacktestPod:
    """What the operator keeps of a backtest pod (kopf index value): which run it is and how it ended.

    `job` and `job_uid` come from the pod's controller owner reference, not from its labels: anyone who can
    create a pod can copy labels, and only a pod a trusted Job controls speaks for a backtest."""

    name: str
    job: str | None
    job_uid: str | None
    digest: str | None
    terminated: Mapping[str, Any] | None
    completion_index: int | None = None  # a pod of an Indexed Job (a sweep shard): which slice it ran

    @classmethod
    def of(
        cls,
        pod: Mapping[str, Any],
        digest_label: str,
        container: str = "backtest",
        index_annotation: str | None = None,
    ) -> BacktestPod:
        meta = pod.get("metadata") or {}
        owner = controller_of(pod)
        job, job_uid = (owner[1], owner[2]) if owner is not None and owner[0] == "Job" else (None, None)
        raw_index = str((meta.get("annotations") or {}).get(index_annotation or "", ""))
        return cls(
            name=str(meta.get("name")),
            job=job,
            job_uid=job_uid,
            digest=(meta.get("labels") or {}).get(digest_label),
            terminated=terminated_state(pod, container),
            completion_index=int(raw_index) if raw_index.isdigit() else None,
        )


@dataclass(frozen=True)
class BacktestJob:
    """What the operator keeps of a backtest Job (kopf index value), with who controls it: the
    TradingStrategy (a Job per spec) or its CronJob (scheduled backtests)."""

    name: str
    uid: str | None
    digest: str | None
    failure: Condition | None
    owner_kind: str | None = None
    owner_uid: str | None = None

    @classmethod
    def of(cls, job: Mapping[str, Any], digest_label: str, type_: str = BACKTEST_SUCCEEDED) -> BacktestJob:
        meta = job.get("metadata") or {}
        owner = controller_of(job)
        return cls(
            name=str(meta.get("name")),
            uid=meta.get("uid"),
            digest=(meta.get("labels") or {}).get(digest_label),
            failure=job_failure(job, type_),
            owner_kind=owner[0] if owner else None,
            owner_uid=owner[2] if owner else None,
        )


def trusted_jobs(jobs: Iterable[BacktestJob], owner_uids: Collection[str]) -> list[BacktestJob]:
    """The Jobs controlled by one of `owner_uids` (the TradingStrategy's uid and its CronJob's)."""
    return [job for job in jobs if job.uid and job.owner_uid in owner_uids]


@dataclass(frozen=True)
class BacktestOutcome:
    condition: Condition
    result: dict[str, Any] | None = None  # status.backtest, on success


def backtest_outcome(
    digest: str, pods: Iterable[BacktestPod], jobs: Iterable[BacktestJob], owner_uids: Collection[str]
) -> BacktestOutcome | None:
    """How the backtest of the current spec (`digest`) ended, from its pods and Jobs; None while it runs.

    Only Jobs controlled by one of `owner_uids` (the TradingStrategy and its CronJob) and pods controlled by
    one of those Jobs count: a pod or Job that merely carries the labels is ignored (issue 14.8).
    A pod that succeeded wins (a Job retries a failed pod), then the newest failed pod (its termination
    message says why), then a Job that failed for good (e.g. its deadline passed with no pod finished).
    Runs of older specs never speak for the resource.
    """
    trusted = trusted_jobs(jobs, owner_uids)
    job_uids = {job.uid for job in trusted}
    finished = sorted(
        (
            pod
            for pod in pods
            if pod.digest == digest and pod.terminated is not None and pod.job_uid in job_uids
        ),
        key=lambda pod: str((pod.terminated or {}).get("finishedAt") or ""),
    )
    succeeded = [pod for pod in finished if int((pod.terminated or {}).get("exitCode") or 0) == 0]
    if succeeded:
        return _succeeded(succeeded[-1], digest)
    if finished:
        terminated = finished[-1].terminated or {}
        message = str(
            terminated.get("message") or terminated.get("reason") or "the backtest container failed"
        )
        return BacktestOutcome(Condition(BACKTEST_SUCCEEDED, False, "BacktestFailed", message[:1024]))
    failed = sorted(
        (job for job in trusted if job.digest == digest and job.failure), key=lambda job: job.name
    )
    if failed and failed[-1].failure is not None:
        return BacktestOutcome(failed[-1].failure)
    return None


def _succeeded(pod: BacktestPod, digest: str) -> BacktestOutcome:
    terminated = pod.terminated or {}
    try:
        metrics = parse_backtest_result(str(terminated.get("message") or ""))
    except ValueError as exc:
        return BacktestOutcome(Condition(BACKTEST_SUCCEEDED, False, "InvalidResult", str(exc)))
    result: dict[str, Any] = {"jobName": pod.job, "hash": digest}
    if terminated.get("finishedAt"):
        result["finishedAt"] = terminated["finishedAt"]
    result.update({to_camel(key): value for key, value in metrics.items()})
    message = f"Job {pod.job}: return {metrics.get('total_return_pct')}%"
    return BacktestOutcome(Condition(BACKTEST_SUCCEEDED, True, "Completed", message), result)


def sweep_running(job: str) -> Condition:
    return Condition(SWEEP_SUCCEEDED, None, "Running", f"sweep Job {job} is running")


@dataclass(frozen=True)
class SweepOutcome:
    condition: Condition
    result: dict[str, Any] | None = None  # status.sweep, once every shard succeeded
    shards: tuple[BacktestPod, ...] = ()  # the pod that succeeded for each index, in index order


def sweep_outcome(
    digest: str,
    shards: int,
    swept: Collection[str],
    top: int,
    pods: Iterable[BacktestPod],
    jobs: Iterable[BacktestJob],
    owner_uids: Collection[str],
) -> SweepOutcome | None:
    """The merged sweep of the current spec (`digest`) once a pod has succeeded for every index, from pods
    controlled by a Job the TradingStrategy controls (a forged pod with copied labels counts for nothing);
    a Job that failed for good says why; None while it runs. `swept` names the swept parameters (the
    columns that are parameters, snake_case), `top` how many ranked rows the status keeps."""
    trusted = [job for job in trusted_jobs(jobs, owner_uids) if job.digest == digest]
    job_uids = {job.uid for job in trusted}
    done: dict[int, BacktestPod] = {}
    for pod in sorted(pods, key=lambda pod: str((pod.terminated or {}).get("finishedAt") or "")):
        terminated = pod.terminated
        index = pod.completion_index
        if (
            pod.digest == digest
            and pod.job_uid in job_uids
            and terminated is not None
            and int(terminated.get("exitCode") or 0) == 0
            and index is not None
            and 0 <= index < shards
        ):
            done[index] = pod
    if len(done) < shards:
        failed = sorted((job for job in trusted if job.failure), key=lambda job: job.name)
        if failed and failed[-1].failure is not None:
            return SweepOutcome(failed[-1].failure)
        return None
    ordered = tuple(done[index] for index in range(shards))
    try:
        reports = [
            shard_format.decode_shard_result(str((pod.terminated or {}).get("message") or ""))
            for pod in ordered
        ]
    except ValueError as exc:
        return SweepOutcome(Condition(SWEEP_SUCCEEDED, False, "InvalidResult", str(exc)[:1024]))
    metric = reports[0].metric
    ranked = shard_format.merge_rows((report.top for report in reports), metric)[:top]
    rows = [sweep_row(row, swept) for row in ranked]
    result: dict[str, Any] = {
        "jobName": ordered[0].job,
        "hash": digest,
        "metric": metric,
        "shards": shards,
        "combinations": sum(report.combinations for report in reports),
        "invalid": reports[0].invalid,
        "top": rows,
    }
    finished = max(str((pod.terminated or {}).get("finishedAt") or "") for pod in ordered)
    if finished:
        result["completedAt"] = finished
    if rows:
        result["best"] = rows[0]
    best = (
        f"best {metric} {rows[0]['metrics'].get(to_camel(metric))} at {rows[0]['params']}"
        if rows
        else "no valid combination"
    )
    message = f"Job {ordered[0].job}: {result['combinations']} combinations over {shards} shards, {best}"
    return SweepOutcome(Condition(SWEEP_SUCCEEDED, True, "Completed", message), result, ordered)


def sweep_row(row: Mapping[str, Any], swept: Collection[str]) -> dict[str, Any]:
    """A ranked row as status.sweep keeps it: the swept parameters and the metrics apart, camelCase."""
    params = {to_camel(key): value for key, value in row.items() if key in swept}
    metrics = {
        to_camel(key): value
        for key, value in row.items()
        if key not in swept and key != shard_format.COMBINATION
    }
    return {"params": params, "metrics": metrics}
