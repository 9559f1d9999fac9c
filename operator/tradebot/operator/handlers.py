"""kopf registrations: thin, they parse, call the renderers, and let `Kube` write only what differs.

- `reconcile` (create, resume, spec update) applies a TradingStrategy's ConfigMap and Deployment and starts
  its backtest. Retry policy is explicit: a spec the API server accepted but our model rejects, or whose
  objects the API server refuses (422), is a `PermanentError` (retrying cannot help; the Ready condition
  says why, and the next spec change runs the handler again), while API hiccups are `TemporaryError`s
  retried with a delay.
- `keep_in_sync` is a daemon per TradingStrategy that sleeps until one of its objects changes (or
  `resync_seconds` pass), then re-applies what was edited or deleted by hand and writes Ready and the
  backtest's result into the status. Its errors are `TemporaryError`s too: kopf restarts it after the delay.
- kopf ignores errors raised in `@kopf.on.event` handlers, so the watch-event handlers here only wake the
  owner's daemon (which cannot fail); and the indexes keep what the daemon reads about backtest pods and
  Jobs, and which strategies exist (`tradebot_operator_managed_strategies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from pydantic import ValidationError

from tradebot.core import shards
from tradebot.operator import render, status
from tradebot.operator.kube import Kube
from tradebot.operator.memo import OperatorMemo, StrategyKey
from tradebot.operator.metrics import BACKTESTS, ERRORS, MANAGED, RECONCILES
from tradebot.operator.settings import OperatorSettings
from tradebot.operator.spec import TradingStrategySpec, describe_validation_error
from tradebot.operator.status import BacktestJob, BacktestPod, Condition

RESOURCE = (render.GROUP, render.VERSION, render.PLURAL)
MANAGED_LABELS = {"app.kubernetes.io/managed-by": render.MANAGED_BY}
STRATEGY_OBJECT = {**MANAGED_LABELS, "app.kubernetes.io/component": render.COMPONENT_STRATEGY}
BACKTEST_OBJECT = {**MANAGED_LABELS, "app.kubernetes.io/component": render.COMPONENT_BACKTEST}
SWEEP_OBJECT = {**MANAGED_LABELS, "app.kubernetes.io/component": render.COMPONENT_SWEEP}
# The kinds the operator owns and watches: only ours are sent by the API server.
OWNED = (("apps", "v1", "deployments"), ("", "v1", "configmaps"), ("batch", "v1", "jobs"), ("", "v1", "pods"))
API_RETRY_S = 5.0
# A change comes as a burst of watch events (an object, its status, its owner's status): one look for all.
COALESCE_S = 0.5


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: OperatorMemo, **kwargs: Any) -> None:
    # Keep kopf's bookkeeping in annotations: our status schema is strict and would prune `status.kopf`.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=render.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=render.GROUP, key="last-handled-configuration"
    )
    # The daemons hold a finalizer while they run (kopf stops them before the resource goes): name it ours.
    settings.persistence.finalizer = f"{render.GROUP}/finalizer"
    for selector in OWNED:
        settings.watching.label_selectors[selector] = f"app.kubernetes.io/managed-by={render.MANAGED_BY}"
    # kopf.info() posts only at this level; kopf's own log lines are not posted (posting.loggers is off).
    settings.posting.level = logging.INFO
    settings.peering.standalone = True
    if memo.settings.namespaces:
        # Given namespaces by name, kopf needs no namespace or CRD watch (both cluster-scoped): the chart's
        # namespaced Roles grant none. The CRD is installed before the operator starts (the chart's crds/).
        settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]
    memo.kube = Kube(AsyncClient(field_manager=render.MANAGED_BY), memo.settings.api_concurrency)
    # kopf passes each index as the kwarg of its name (its handler protocols cannot name ours).
    managed: kopf.Index[StrategyKey, None] = kwargs["managed_strategies"]
    # Read at every scrape: kopf drops an index entry when its resource is deleted or stops matching.
    MANAGED.set_function(lambda: len(managed))


@kopf.on.cleanup()
async def close_client(memo: OperatorMemo, **_: Any) -> None:
    if memo.kube is not None:
        await memo.kube.close()
        memo.kube = None


def parse_spec(spec: Mapping[str, Any]) -> TradingStrategySpec:
    try:
        return TradingStrategySpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise kopf.PermanentError(describe_validation_error(exc)) from exc


def _accepted(spec: kopf.Spec, **_: Any) -> bool:
    try:
        parse_spec(spec)
    except kopf.PermanentError:
        return False
    return True


# -- indexes: what the operator knows without asking the API server -------------------------------------
def _owner(namespace: str | None, labels: Mapping[str, str]) -> StrategyKey | None:
    owner = labels.get(render.STRATEGY_LABEL)
    return (namespace, owner) if namespace and owner else None


@kopf.index(*RESOURCE, when=_accepted)
def managed_strategies(namespace: str | None, name: str, **_: Any) -> dict[StrategyKey, None] | None:
    """The TradingStrategies with a spec the operator runs (the managed-strategies gauge)."""
    return {(namespace, name): None} if namespace else None


@kopf.index("", "v1", "pods", labels=BACKTEST_OBJECT)
def backtest_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[StrategyKey, BacktestPod] | None:
    key = _owner(namespace, labels)
    return {key: BacktestPod.of(body, render.BACKTEST_HASH_LABEL)} if key else None


@kopf.index("batch", "v1", "jobs", labels=BACKTEST_OBJECT)
def backtest_jobs(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[StrategyKey, BacktestJob] | None:
    key = _owner(namespace, labels)
    return {key: BacktestJob.of(body, render.BACKTEST_HASH_LABEL)} if key else None


@kopf.index("", "v1", "pods", labels=SWEEP_OBJECT)
def sweep_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[StrategyKey, BacktestPod] | None:
    key = _owner(namespace, labels)
    if key is None:
        return None
    pod = BacktestPod.of(
        body, render.SWEEP_HASH_LABEL, render.COMPONENT_SWEEP, render.COMPLETION_INDEX_ANNOTATION
    )
    return {key: pod}


@kopf.index("batch", "v1", "jobs", labels=SWEEP_OBJECT)
def sweep_jobs(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[StrategyKey, BacktestJob] | None:
    key = _owner(namespace, labels)
    return {key: BacktestJob.of(body, render.SWEEP_HASH_LABEL, status.SWEEP_SUCCEEDED)} if key else None


# -- watch events of owned objects: wake the owner's daemon, nothing else --------------------------------
@kopf.on.event("apps", "v1", "deployments", labels=STRATEGY_OBJECT)
@kopf.on.event("", "v1", "configmaps", labels=STRATEGY_OBJECT)
@kopf.on.event("batch", "v1", "jobs", labels=BACKTEST_OBJECT)
@kopf.on.event("", "v1", "pods", labels=BACKTEST_OBJECT)
@kopf.on.event("batch", "v1", "jobs", labels=SWEEP_OBJECT)
@kopf.on.event("", "v1", "pods", labels=SWEEP_OBJECT)
def owned_object_changed(namespace: str | None, labels: kopf.Labels, memo: OperatorMemo, **_: Any) -> None:
    # kopf has updated the indexes with this event before calling event handlers.
    key = _owner(namespace, labels)
    if key is not None:
        memo.wakeups.notify(key)


@kopf.on.event(*RESOURCE)
def strategy_changed(namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    # E.g. the reconcile handler has just recorded the generation it handled: the daemon may act for it.
    if namespace is not None:
        memo.wakeups.notify((namespace, name))


# -- the spec: create, resume, update -------------------------------------------------------------------
@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    memo: OperatorMemo,
    **_: Any,
) -> None:
    assert namespace is not None, "TradingStrategy is a namespaced resource"
    kube, settings = memo.client, memo.settings
    generation = int(meta.get("generation") or 0)
    try:
        parsed = parse_spec(spec)
    except kopf.PermanentError as exc:
        ERRORS.labels(kind="permanent").inc()
        RECONCILES.labels(result="invalid").inc()
        await _write_status(kube, body, generation, [status.invalid_spec(str(exc))], observe=True)
        raise
    conditions: list[Condition] = []
    try:
        async with memo.apply_lock:
            applied, deployment = await _apply_strategy(kube, body, name, namespace, parsed, settings)
        # One Event for what was applied (an Event is a write: one a resource, not one an object).
        objects = [f"{m['kind']} {m['metadata']['name']}" for m in applied if m["kind"] != "CronJob"]
        if objects:
            kopf.info(body, reason="Applied", message=f"{', '.join(objects)} applied")
        for manifest in applied:
            if manifest["kind"] == "CronJob":
                kopf.info(
                    body, reason="BacktestScheduled", message=f"backtests on '{manifest['spec']['schedule']}'"
                )
        if parsed.backtest is not None:
            started = await _ensure_backtest(kube, body, name, namespace, parsed, settings)
            if started is not None:
                conditions.append(status.backtest_running(started))
            sweep = await _ensure_sweep(kube, body, name, namespace, parsed, settings)
            if sweep is not None:
                conditions.append(status.sweep_running(sweep))
    except ApiError as exc:
        if _refused(exc):
            # The objects this spec renders are invalid (a quantity or schedule the CRD could not check):
            # retrying cannot help until the spec changes, which runs this handler again.
            ERRORS.labels(kind="permanent").inc()
            RECONCILES.labels(result="invalid").inc()
            message = _refusal_message(exc)
            await _write_status(kube, body, generation, [status.invalid_spec(message)], observe=True)
            raise kopf.PermanentError(message) from exc
        ERRORS.labels(kind="temporary").inc()
        RECONCILES.labels(result="error").inc()
        raise kopf.TemporaryError(f"API server: {exc.status.message}", delay=API_RETRY_S) from exc
    RECONCILES.labels(result="ok").inc()
    conditions.insert(0, status.deployment_readiness(deployment, suspended=parsed.suspend))
    # The daemon may have written conditions since this handler started: merge into the newest status.
    try:
        fresh: Mapping[str, Any] = await kube.get_strategy(name, namespace) or body
    except ApiError:
        fresh = body
    await _write_status(kube, fresh, generation, conditions, observe=True)


def _refused(exc: ApiError) -> bool:
    """The API server refused an object as invalid (422): a property of the spec, not of the moment."""
    return exc.status.code == 422


def _refusal_message(exc: ApiError) -> str:
    return f"the API server refused an object this spec makes: {exc.status.message}"[:1024]


async def _apply_strategy(
    kube: Kube,
    owner: kopf.Body,
    name: str,
    namespace: str,
    spec: TradingStrategySpec,
    settings: OperatorSettings,
) -> tuple[list[render.Manifest], dict[str, Any]]:
    """Apply the strategy's ConfigMap and Deployment (and scheduled backtests' CronJob) where the live object
    differs: (the manifests applied, the Deployment as it is now)."""
    manifests = [render.render_configmap(name, namespace, spec)]
    shared_env = settings.shared_env_secret
    source_namespace = settings.shared_env_namespace
    if shared_env and source_namespace and namespace != source_namespace:
        # A pod reads Secrets of its own namespace only: copy the shared environment (broker and Redis
        # addresses and credentials) next to the strategy, owned by it.
        source = await kube.get("v1", "Secret", shared_env, source_namespace)
        if source is not None:
            copy = render.render_shared_env_copy(name, namespace, source.get("data") or {})
            manifests.append(copy)
            shared_env = copy["metadata"]["name"]
    manifests.append(
        render.render_deployment(
            name,
            namespace,
            spec,
            default_image=settings.strategy_image,
            shared_env_from=shared_env,
        )
    )
    if spec.backtest is not None and spec.backtest.schedule:
        manifests.append(
            render.render_backtest_cronjob(name, namespace, spec, default_image=settings.strategy_image)
        )
    applied: list[render.Manifest] = []
    deployment: dict[str, Any] = {}
    for manifest in manifests:
        kopf.adopt(manifest, owner=owner)
        changed, live = await kube.apply_if_changed(manifest)
        if changed:
            applied.append(manifest)
        if manifest["kind"] == "Deployment":
            deployment = live
    return applied, deployment


async def _ensure_backtest(
    kube: Kube,
    body: kopf.Body,
    name: str,
    namespace: str,
    spec: TradingStrategySpec,
    settings: OperatorSettings,
) -> str | None:
    """Create the backtest Job of this spec unless it exists (or a CronJob runs them): its name if created."""
    assert spec.backtest is not None
    if spec.backtest.schedule:
        return None  # the CronJob is applied with the strategy's objects
    job = render.render_backtest_job(name, namespace, spec, default_image=settings.strategy_image)
    created = await _create_owned(kube, body, job, reason="BacktestStarted")
    if created is not None:
        BACKTESTS.labels(result="started").inc()
    return created


async def _create_owned(kube: Kube, body: kopf.Body, job: render.Manifest, *, reason: str) -> str | None:
    """Create `job`, owned by the resource, unless it exists (its name makes it per spec): its name if created."""
    kopf.adopt(job, owner=body)
    if not await kube.create_if_absent(job):
        return None
    kopf.info(body, reason=reason, message=f"{job['kind']} {job['metadata']['name']} created")
    return str(job["metadata"]["name"])


async def _ensure_sweep(
    kube: Kube,
    body: kopf.Body,
    name: str,
    namespace: str,
    spec: TradingStrategySpec,
    settings: OperatorSettings,
) -> str | None:
    """Create the sweep's Indexed Job of this spec unless it exists or its result is in the status already
    (the Job goes a day after it finishes: a restarted operator must not run the sweep again)."""
    if spec.backtest is None or spec.backtest.sweep is None:
        return None
    if (body.status.get("sweep") or {}).get("hash") == render.sweep_hash(spec):
        return None
    job = render.render_sweep_job(name, namespace, spec, default_image=settings.strategy_image)
    return await _create_owned(kube, body, job, reason="SweepStarted")


# -- the daemon: owned objects back to the spec, Ready and backtest results into the status --------------
@kopf.daemon(*RESOURCE, cancellation_timeout=5.0, backoff=API_RETRY_S)
async def keep_in_sync(
    body: kopf.Body, name: str, namespace: str | None, memo: OperatorMemo, **kwargs: Any
) -> None:
    """Runs while the resource exists; `body` is kopf's live view of it."""
    assert namespace is not None, "TradingStrategy is a namespaced resource"
    pods: kopf.Index[StrategyKey, BacktestPod] = kwargs["backtest_pods"]
    jobs: kopf.Index[StrategyKey, BacktestJob] = kwargs["backtest_jobs"]
    shard_pods: kopf.Index[StrategyKey, BacktestPod] = kwargs["sweep_pods"]
    shard_jobs: kopf.Index[StrategyKey, BacktestJob] = kwargs["sweep_jobs"]
    key = (namespace, name)
    wakeup = memo.wakeups.register(key)
    try:
        while True:
            wakeup.clear()
            try:
                await _sync(memo, body, key, pods.get(key, ()), jobs.get(key, ()))
                await _sync_sweep(memo, body, key, shard_pods.get(key, ()), shard_jobs.get(key, ()))
            except ApiError as exc:
                ERRORS.labels(kind="temporary").inc()
                raise kopf.TemporaryError(f"API server: {exc.status.message}", delay=API_RETRY_S) from exc
            with contextlib.suppress(TimeoutError):  # a periodic look, in case a watch event was missed
                await asyncio.wait_for(wakeup.wait(), timeout=memo.settings.resync_seconds)
            await asyncio.sleep(COALESCE_S)
    finally:
        memo.wakeups.unregister(key, wakeup)


async def _sync(
    memo: OperatorMemo,
    body: kopf.Body,
    key: StrategyKey,
    pods: Iterable[BacktestPod],
    jobs: Iterable[BacktestJob],
) -> None:
    namespace, name = key
    if body.meta.get("deletionTimestamp"):
        return  # going away: what it owns goes with it (kopf stops this daemon before removing the finalizer)
    try:
        spec = TradingStrategySpec.model_validate(dict(body.spec))
    except ValidationError:
        return  # the reconcile handler reports it (Ready=False, InvalidSpec) and nothing runs
    kube, generation = memo.client, int(body.meta.get("generation") or 0)
    conditions: list[Condition] = []
    # Only a spec the reconcile handler has handled speaks for the objects: until then it is applying them.
    if int(body.status.get("observedGeneration") or 0) == generation:
        try:
            async with memo.apply_lock:
                repaired, deployment = await _apply_strategy(kube, body, name, namespace, spec, memo.settings)
        except ApiError as exc:
            if not _refused(exc):
                raise
            # Not an error to restart this daemon for every few seconds: Ready says why; a spec change wakes it.
            await _write_status(kube, body, generation, [status.invalid_spec(_refusal_message(exc))])
            return
        for manifest in repaired:
            kopf.warn(
                body,
                reason="DriftRepaired",
                message=f"{manifest['kind']} {manifest['metadata']['name']} differed from what the "
                "TradingStrategy asks for (edited or deleted by hand?): applied again",
            )
        conditions.append(status.deployment_readiness(deployment or None, suspended=spec.suspend))
    backtest = None
    if spec.backtest is not None:
        jobs = list(jobs)
        owners = await _backtest_owner_uids(kube, body, name, namespace, jobs)
        backtest = status.backtest_outcome(render.backtest_hash(spec), pods, jobs, owners)
    if backtest is not None:
        conditions.append(backtest.condition)
    if not conditions:
        return
    before = status.condition_of(body, status.BACKTEST_SUCCEEDED)
    before_result = dict(body.status.get("backtest") or {})
    await _write_status(
        kube, body, generation, conditions, backtest_result=backtest.result if backtest else None
    )
    if backtest is not None:
        _count_backtest(body, backtest, before, before_result)


async def _backtest_owner_uids(
    kube: Kube, body: kopf.Body, name: str, namespace: str, jobs: Iterable[BacktestJob]
) -> set[str]:
    """Who may control a backtest Job of this strategy: the TradingStrategy itself, and (when some Job says a
    CronJob controls it) the strategy's own CronJob, if the TradingStrategy controls that one."""
    strategy_uid = str(body.meta.get("uid") or "")
    owners = {strategy_uid} if strategy_uid else set()
    if strategy_uid and any(job.owner_kind == "CronJob" for job in jobs):
        cronjob = await kube.get("batch/v1", "CronJob", render.backtest_cronjob_name(name), namespace)
        controller = status.controller_of(cronjob) if cronjob is not None else None
        if cronjob is not None and controller is not None and controller[2] == strategy_uid:
            owners.add(str(cronjob["metadata"]["uid"]))
    return owners


async def _sync_sweep(
    memo: OperatorMemo,
    body: kopf.Body,
    key: StrategyKey,
    pods: Iterable[BacktestPod],
    jobs: Iterable[BacktestJob],
) -> None:
    """The sweep's shards merged into status.sweep (from their termination messages) and its full table
    into the `<name>-sweep` ConfigMap (from their logs), each written only when it changes."""
    namespace, name = key
    if body.meta.get("deletionTimestamp"):
        return
    try:
        spec = TradingStrategySpec.model_validate(dict(body.spec))
    except ValidationError:
        return
    if spec.backtest is None or spec.backtest.sweep is None:
        return
    sweep = spec.backtest.sweep
    kube, generation = memo.client, int(body.meta.get("generation") or 0)
    digest = render.sweep_hash(spec)
    strategy_uid = str(body.meta.get("uid") or "")
    outcome = status.sweep_outcome(
        digest,
        sweep.shards,
        set(sweep.parameters.ranges()),
        sweep.top,
        pods,
        jobs,
        {strategy_uid} if strategy_uid else set(),
    )
    if outcome is None:
        return
    condition, result = outcome.condition, outcome.result
    before = dict(body.status.get("sweep") or {})
    if result is not None:
        # The table of this spec written already (the status says so): an idle operator reads nothing more.
        done = before.get("hash") == digest and bool(before.get("configMap"))
        problem = (
            None
            if done
            else await _sweep_table(kube, body, name, namespace, digest, result["metric"], outcome.shards)
        )
        configmap = render.sweep_configmap_name(name)
        if problem is None:
            condition = status.Condition(
                condition.type,
                True,
                condition.reason,
                f"{condition.message}; full table in ConfigMap {configmap}",
            )
            result = {**result, "configMap": configmap}
        else:
            condition = status.Condition(
                condition.type,
                True,
                "TableUnavailable",
                f"{condition.message}; full table unavailable: {problem}",
            )
    await _write_status(kube, body, generation, [condition], sweep_result=result)
    if result is not None and result != before:
        kopf.info(body, reason="SweepSucceeded", message=condition.message[:1024])


async def _sweep_table(
    kube: Kube,
    body: kopf.Body,
    name: str,
    namespace: str,
    digest: str,
    metric: str,
    pods: Iterable[BacktestPod],
) -> str | None:
    """Apply the ConfigMap with the full table unless it holds this sweep's already: None when it does, else
    why the shards' logs could not give it (the status still has the best rows)."""
    existing = await kube.get("v1", "ConfigMap", render.sweep_configmap_name(name), namespace)
    if existing is not None and (existing.get("data") or {}).get("hash") == digest:
        return None
    tables = []
    for pod in pods:
        try:
            log = await kube.pod_log(pod.name, namespace, render.COMPONENT_SWEEP)
        except ApiError as exc:
            return f"pods/log of {pod.name}: {exc.status.message}"[:512]
        rows = shards.parse_table_lines(log)
        # The log must hold the whole slice the pod reported (a rotated or missing log holds less).
        expected = shards.decode_shard_result(str((pod.terminated or {}).get("message") or "")).combinations
        if len(rows) != expected:
            return f"the log of {pod.name} has {len(rows)} of its {expected} rows"
        tables.append(rows)
    merged = shards.merge_rows(tables, metric)
    manifest = render.render_sweep_configmap(
        name, namespace, digest=digest, metric=metric, table_csv=shards.table_csv(merged)
    )
    kopf.adopt(manifest, owner=body)
    await kube.apply_if_changed(manifest)
    return None


def _count_backtest(
    body: kopf.Body,
    outcome: status.BacktestOutcome,
    before: Mapping[str, Any] | None,
    before_result: Mapping[str, Any],
) -> None:
    """Count and announce a backtest's end once, when the status changes to it."""
    condition = outcome.condition
    if outcome.result is not None and dict(outcome.result) != dict(before_result):
        BACKTESTS.labels(result="succeeded").inc()
        kopf.info(body, reason="BacktestSucceeded", message=condition.message)
    elif condition.status is False and (before or {}).get("status") != "False":
        BACKTESTS.labels(result="failed").inc()
        kopf.warn(body, reason="BacktestFailed", message=f"{condition.reason}: {condition.message}")


# -- status ------------------------------------------------------------------------------------------------
async def _write_status(
    kube: Kube,
    body: Mapping[str, Any],
    generation: int,
    conditions: list[Condition],
    *,
    backtest_result: Mapping[str, Any] | None = None,
    sweep_result: Mapping[str, Any] | None = None,
    observe: bool = False,
) -> None:
    """Patch the status only where it would change (no writes when idle).

    The reconcile handler and the daemon write concurrently, and a merge patch replaces the whole
    conditions list: each patch is therefore conditional on the resourceVersion it was computed from, and a
    conflict recomputes it from the newest object. `observe` (reconcile only) moves status.observedGeneration.
    """
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    current_body: Mapping[str, Any] | None = body
    for _attempt in range(8):
        if current_body is None:
            return  # deleted meanwhile
        patch = _status_patch(
            current_body.get("status") or {},
            generation,
            conditions,
            backtest_result,
            observe=observe,
            sweep_result=sweep_result,
        )
        if not patch:
            return
        try:
            await kube.patch_strategy_status(
                name, namespace, patch, resource_version=current_body["metadata"].get("resourceVersion")
            )
            return
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        current_body = await kube.get_strategy(name, namespace)
    raise kopf.TemporaryError("the status kept changing under the operator; retrying", delay=1)


def _replacing(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that turns `before` into `after`: a merge patch merges objects, so what `before` has and
    `after` has not is removed by null, at every depth (lists are replaced whole)."""
    patch: dict[str, Any] = dict.fromkeys(set(before) - set(after))
    for key, value in after.items():
        old = before.get(key)
        patch[key] = (
            _replacing(old, value) if isinstance(value, Mapping) and isinstance(old, Mapping) else value
        )
    return patch


def _status_patch(
    current: Mapping[str, Any],
    generation: int,
    conditions: list[Condition],
    backtest_result: Mapping[str, Any] | None,
    *,
    observe: bool,
    sweep_result: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    now = status.now_rfc3339()
    stored = list(current.get("conditions") or [])
    for condition in conditions:
        stored = status.set_condition(stored, condition, generation=generation, now=now)
    patch: dict[str, Any] = {}
    if stored != list(current.get("conditions") or []):
        patch["conditions"] = stored
    if observe and current.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    if backtest_result is not None and dict(current.get("backtest") or {}) != dict(backtest_result):
        patch["backtest"] = dict(backtest_result)
    before_sweep = dict(current.get("sweep") or {})
    if sweep_result is not None and before_sweep != dict(sweep_result):
        patch["sweep"] = _replacing(before_sweep, sweep_result)
    return patch
