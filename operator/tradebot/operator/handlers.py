"""kopf registrations: thin, they parse, call the renderers, and let `Kube` write only what differs.

Retry policy is explicit: a spec the API server accepted but our model rejects is a `PermanentError` (retrying
cannot help; the Ready condition says why), while API hiccups are `TemporaryError`s retried with a delay.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from pydantic import ValidationError

from tradebot.operator import render, status
from tradebot.operator.kube import Kube
from tradebot.operator.metrics import BACKTESTS, ERRORS, MANAGED, RECONCILES
from tradebot.operator.settings import OperatorSettings
from tradebot.operator.spec import TradingStrategySpec, describe_validation_error

_STATE: dict[str, Any] = {}
_MANAGED: set[tuple[str, str]] = set()
RESOURCE = (render.GROUP, render.VERSION, render.PLURAL)
MANAGED_LABELS = {"app.kubernetes.io/managed-by": render.MANAGED_BY}


def _kube() -> Kube:
    kube = _STATE.get("kube")
    if kube is None:
        kube = Kube(AsyncClient(field_manager=render.MANAGED_BY))
        _STATE["kube"] = kube
    assert isinstance(kube, Kube)
    return kube


def _settings() -> OperatorSettings:
    settings = _STATE.get("settings")
    if settings is None:
        settings = OperatorSettings()
        _STATE["settings"] = settings
    assert isinstance(settings, OperatorSettings)
    return settings


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: our status schema is strict and would prune `status.kopf`.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=render.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=render.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = [1, 2, 5, 10]


@kopf.on.cleanup()
async def close_client(**_: Any) -> None:
    kube = _STATE.pop("kube", None)
    if isinstance(kube, Kube):
        await kube.close()


def parse_spec(spec: Mapping[str, Any]) -> TradingStrategySpec:
    try:
        return TradingStrategySpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise kopf.PermanentError(describe_validation_error(exc)) from exc


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    assert namespace is not None, "TradingStrategy is a namespaced resource"
    kube = _kube()
    settings = _settings()
    generation = int(meta.get("generation") or 0)
    try:
        parsed = parse_spec(spec)
    except kopf.PermanentError as exc:
        ERRORS.labels(kind="permanent").inc()
        RECONCILES.labels(result="invalid").inc()
        await _write_status(
            kube,
            body,
            generation,
            ready=(False, "InvalidSpec", str(exc)),
            observe=True,
        )
        raise
    try:
        configmap = render.render_configmap(name, namespace, parsed)
        owned = [configmap]
        shared_env = settings.shared_env_secret
        source_namespace = settings.shared_env_namespace
        if shared_env and source_namespace and namespace != source_namespace:
            source = await kube.get("v1", "Secret", shared_env, source_namespace)
            if source is not None:
                copy = render.render_shared_env_copy(name, namespace, source.get("data") or {})
                owned.append(copy)
                shared_env = copy["metadata"]["name"]
        deployment = render.render_deployment(
            name,
            namespace,
            parsed,
            default_image=settings.strategy_image,
            shared_env_from=shared_env,
        )
        for manifest in (*owned, deployment):
            kopf.adopt(manifest, owner=body)
            if await kube.apply_if_changed(manifest):
                kopf.info(
                    body,
                    reason="Applied",
                    message=f"{manifest['kind']} {manifest['metadata']['name']} applied",
                )
        backtest_condition: tuple[bool | None, str, str] | None = None
        if parsed.backtest is not None:
            backtest_condition = await _ensure_backtest(kube, body, name, namespace, parsed, settings)
        live = await kube.get("apps/v1", "Deployment", deployment["metadata"]["name"], namespace)
    except ApiError as exc:
        ERRORS.labels(kind="temporary").inc()
        RECONCILES.labels(result="error").inc()
        raise kopf.TemporaryError(f"API server: {exc.status.message}", delay=5) from exc
    _MANAGED.add((namespace, name))
    MANAGED.set(len(_MANAGED))
    RECONCILES.labels(result="ok").inc()
    # Event handlers may have written conditions since this handler started: merge into the newest status.
    try:
        fresh: Mapping[str, Any] = await kube.get_strategy(name, namespace) or body
    except ApiError:
        fresh = body
    await _write_status(
        kube,
        fresh,
        generation,
        ready=status.deployment_readiness(live, suspended=parsed.suspend),
        backtest=backtest_condition,
        observe=True,
    )


async def _ensure_backtest(
    kube: Kube,
    body: kopf.Body,
    name: str,
    namespace: str,
    spec: TradingStrategySpec,
    settings: OperatorSettings,
) -> tuple[bool | None, str, str] | None:
    assert spec.backtest is not None
    if spec.backtest.schedule:
        cronjob = render.render_backtest_cronjob(name, namespace, spec, default_image=settings.strategy_image)
        kopf.adopt(cronjob, owner=body)
        if await kube.apply_if_changed(cronjob):
            kopf.info(body, reason="BacktestScheduled", message=f"backtests on '{spec.backtest.schedule}'")
        return None
    job = render.render_backtest_job(name, namespace, spec, default_image=settings.strategy_image)
    kopf.adopt(job, owner=body)
    if await kube.create_if_absent(job):
        BACKTESTS.labels(result="started").inc()
        kopf.info(body, reason="BacktestStarted", message=f"Job {job['metadata']['name']} created")
        return None, "Running", f"backtest Job {job['metadata']['name']} is running"
    return None


async def _write_status(
    kube: Kube,
    body: Mapping[str, Any],
    generation: int,
    *,
    ready: tuple[bool, str, str] | None = None,
    backtest: tuple[bool | None, str, str] | None = None,
    backtest_result: Mapping[str, Any] | None = None,
    observe: bool = False,
) -> None:
    """Patch the status only where it would change (no writes when idle).

    Handlers run concurrently (a reconcile, Deployment and pod events), and a merge patch replaces the whole
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
            current_body.get("status") or {}, generation, ready, backtest, backtest_result, observe=observe
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


def _status_patch(
    current: Mapping[str, Any],
    generation: int,
    ready: tuple[bool, str, str] | None,
    backtest: tuple[bool | None, str, str] | None,
    backtest_result: Mapping[str, Any] | None,
    *,
    observe: bool,
) -> dict[str, Any]:
    now = status.now_rfc3339()
    conditions = list(current.get("conditions") or [])
    if ready is not None:
        conditions = status.set_condition(
            conditions,
            type_=status.READY,
            status=ready[0],
            reason=ready[1],
            message=ready[2],
            generation=generation,
            now=now,
        )
    if backtest is not None:
        conditions = status.set_condition(
            conditions,
            type_=status.BACKTEST_SUCCEEDED,
            status=backtest[0],
            reason=backtest[1],
            message=backtest[2],
            generation=generation,
            now=now,
        )
    patch: dict[str, Any] = {}
    if conditions != list(current.get("conditions") or []):
        patch["conditions"] = conditions
    if observe and current.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    if backtest_result is not None and dict(current.get("backtest") or {}) != dict(backtest_result):
        patch["backtest"] = dict(backtest_result)
    return patch


async def _owner(kube: Kube, labels: Mapping[str, str], namespace: str) -> dict[str, Any] | None:
    owner = labels.get(render.STRATEGY_LABEL)
    return await kube.get_strategy(owner, namespace) if owner else None


@kopf.on.event(
    "apps", "v1", "deployments", labels={**MANAGED_LABELS, "app.kubernetes.io/component": "strategy"}
)
async def deployment_changed(body: kopf.Body, namespace: str | None, type: str | None, **_: Any) -> None:
    if type == "DELETED" or namespace is None:
        return
    kube = _kube()
    try:
        owner = await _owner(kube, body.metadata.labels, namespace)
        if owner is None:
            return
        suspended = bool((owner.get("spec") or {}).get("suspend"))
        generation = int(owner["metadata"].get("generation") or 0)
        await _write_status(
            kube, owner, generation, ready=status.deployment_readiness(dict(body), suspended=suspended)
        )
    except ApiError as exc:
        raise kopf.TemporaryError(f"API server: {exc.status.message}", delay=5) from exc


def _is_current_backtest(owner: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Only the Job of the resource's current spec may speak for it; results of stale Jobs are ignored."""
    try:
        spec = TradingStrategySpec.model_validate(dict(owner.get("spec") or {}))
    except ValidationError:
        return False
    if spec.backtest is None:
        return False
    return labels.get(render.BACKTEST_HASH_LABEL) == render.backtest_hash(spec)


async def _backtest_owner(
    body: kopf.Body, namespace: str | None, event_type: str | None
) -> tuple[Kube, dict[str, Any], int] | None:
    """The client, the owning TradingStrategy and its generation, for an event about its current
    backtest; None when the event is a deletion or about an outdated or foreign backtest."""
    if event_type == "DELETED" or namespace is None:
        return None
    kube = _kube()
    owner = await _owner(kube, body.metadata.labels, namespace)
    if owner is None or not _is_current_backtest(owner, body.metadata.labels):
        return None
    return kube, owner, int(owner["metadata"].get("generation") or 0)


@kopf.on.event("", "v1", "pods", labels={**MANAGED_LABELS, "app.kubernetes.io/component": "backtest"})
async def backtest_pod_changed(body: kopf.Body, namespace: str | None, type: str | None, **_: Any) -> None:
    terminated = status.terminated_state(dict(body))
    if terminated is None:
        return
    found = await _backtest_owner(body, namespace, type)
    if found is None:
        return
    kube, owner, generation = found
    job = body.metadata.labels.get("job-name") or body.metadata.name
    if int(terminated.get("exitCode") or 0) != 0:
        message = str(
            terminated.get("message") or terminated.get("reason") or "the backtest container failed"
        )
        await _write_status(kube, owner, generation, backtest=(False, "BacktestFailed", message[:1024]))
        BACKTESTS.labels(result="failed").inc()
        return
    try:
        metrics = status.parse_backtest_result(str(terminated.get("message") or ""))
    except ValueError as exc:
        await _write_status(kube, owner, generation, backtest=(False, "InvalidResult", str(exc)))
        BACKTESTS.labels(result="failed").inc()
        return
    result = {
        "jobName": job,
        "hash": body.metadata.labels.get(render.BACKTEST_HASH_LABEL),
        "finishedAt": terminated.get("finishedAt") or status.now_rfc3339(),
        **{status.to_camel(key): value for key, value in metrics.items()},
    }
    already = dict((owner.get("status") or {}).get("backtest") or {}) == result
    await _write_status(
        kube,
        owner,
        generation,
        backtest=(True, "Completed", f"Job {job}: return {metrics.get('total_return_pct')}%"),
        backtest_result=result,
    )
    if not already:
        BACKTESTS.labels(result="succeeded").inc()
        kopf.info(
            kopf.Body(cast("kopf.RawBody", owner)), reason="BacktestSucceeded", message=f"Job {job} completed"
        )


@kopf.on.event("batch", "v1", "jobs", labels={**MANAGED_LABELS, "app.kubernetes.io/component": "backtest"})
async def backtest_job_changed(body: kopf.Body, namespace: str | None, type: str | None, **_: Any) -> None:
    failure = status.job_failure(dict(body))
    if failure is None:
        return
    found = await _backtest_owner(body, namespace, type)
    if found is None:
        return
    kube, owner, generation = found
    current = [
        c
        for c in (owner.get("status") or {}).get("conditions") or []
        if c.get("type") == status.BACKTEST_SUCCEEDED
    ]
    await _write_status(kube, owner, generation, backtest=(False, failure[0], failure[1]))
    if not current or current[0].get("status") != "False":
        BACKTESTS.labels(result="failed").inc()
        kopf.warn(
            kopf.Body(cast("kopf.RawBody", owner)),
            reason="BacktestFailed",
            message=f"Job {body.metadata.name}: {failure[0]}: {failure[1]}",
        )
