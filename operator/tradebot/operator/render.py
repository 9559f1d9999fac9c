"""Pure functions that turn a `TradingStrategy` into the objects the operator owns.

Nothing here talks to the API server, so every rendering is unit-testable and the reconcile loop can compare
what it wants with what exists before writing anything (an idle operator makes no writes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tradebot.operator.spec import BacktestSpec, TradingStrategySpec

GROUP = "tradebot.dev"
VERSION = "v1alpha1"
PLURAL = "tradingstrategies"
KIND = "TradingStrategy"
MANAGED_BY = "tradebot-operator"
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
BACKTEST_HASH_LABEL = f"{GROUP}/backtest-hash"
STRATEGY_LABEL = f"{GROUP}/strategy"
COMPONENT_STRATEGY = "strategy"
COMPONENT_BACKTEST = "backtest"
COMPONENT_SWEEP = "sweep"
SWEEP_HASH_LABEL = f"{GROUP}/sweep-hash"
# Set by the Job controller on each pod of an Indexed Job (also as $JOB_COMPLETION_INDEX inside it).
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
SWEEP_TABLE_KEY = "results.csv"
HTTP_PORT = 8080
# /livez, /readyz and /metrics on a port of their own, named "metrics" like every tradebot pod's: the chart's
# NetworkPolicy opens that name to Prometheus and nothing else (a strategy serves no other route).
METRICS_PORT = 9090
RESULT_PATH = "/dev/termination-log"

Manifest = dict[str, Any]


def canonical_hash(payload: Any, length: int = 16) -> str:
    """A stable short hash of JSON-able data (sorted keys), used for rollouts and Job names."""
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:length]


def labels(name: str, component: str, *, version: str = "0.1.0") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tradebot",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "tradebot",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": version,
        STRATEGY_LABEL: name,
    }


def selector_labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        STRATEGY_LABEL: name,
    }


def strategy_env(name: str, spec: TradingStrategySpec) -> dict[str, str]:
    """The strategy service's configuration, as the environment variables it reads (see services/README.md)."""
    return {
        "TRADEBOT_STRATEGY_ID": name,
        "TRADEBOT_STRATEGY_SYMBOLS": ",".join(spec.symbols),
        "TRADEBOT_STRATEGY_PARAMS": spec.strategy_params().model_dump_json(),
    }


def render_configmap(name: str, namespace: str, spec: TradingStrategySpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{name}-strategy",
            "namespace": namespace,
            "labels": labels(name, COMPONENT_STRATEGY),
        },
        "data": strategy_env(name, spec),
    }


def render_shared_env_copy(name: str, namespace: str, data: Mapping[str, str]) -> Manifest:
    """The shared-env Secret's data next to a strategy outside the release's namespace (envFrom cannot
    reach across namespaces); owned by the TradingStrategy, so it goes with it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{name}-shared-env",
            "namespace": namespace,
            "labels": labels(name, COMPONENT_STRATEGY),
        },
        "type": "Opaque",
        "data": dict(data),
    }


# What a strategy or backtest container gets unless the TradingStrategy's spec.resources says otherwise
# (then the spec's whole, as Kubernetes would read it): never unbounded.
DEFAULT_STRATEGY_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
DEFAULT_BACKTEST_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
TMP_SIZE_LIMIT = "64Mi"


def _restricted_security_context() -> dict[str, Any]:
    """The chart's container securityContext (charts/tradebot/values.yaml `securityContext`)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security_context() -> dict[str, Any]:
    """The chart's `podSecurityContext`."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _hardened_pod_spec() -> dict[str, Any]:
    """Pod-level settings of every pod the operator makes: neither a strategy nor a backtest calls the
    Kubernetes API, so no ServiceAccount token is mounted; no Service environment variables either."""
    return {
        "securityContext": _pod_security_context(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }


def _tmp_volume() -> dict[str, Any]:
    # The root filesystem is read-only: /tmp is the only writable place, and bounded.
    return {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}


def _kafka_credentials_env(spec: TradingStrategySpec) -> list[dict[str, Any]]:
    """The strategy's own Kafka user from its Secret: `env` wins over `envFrom`, so over the shared env's user
    (a user whose ACLs let it write its own state topic and no other strategy's)."""
    secret = spec.kafka_credentials_secret
    if secret is None:
        return []
    return [
        {
            "name": f"TRADEBOT_KAFKA_SASL_{key.upper()}",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
        }
        for key in ("username", "password")
    ]


def render_deployment(
    name: str,
    namespace: str,
    spec: TradingStrategySpec,
    *,
    default_image: str,
    shared_env_from: str | None,
) -> Manifest:
    """The strategy Deployment; a config-hash annotation on the pod template rolls pods on any spec change."""
    configmap = render_configmap(name, namespace, spec)
    image = spec.image or default_image
    config_hash = canonical_hash(
        {
            "data": configmap["data"],
            "image": image,
            "resources": spec.resources,
            "kafka_credentials": spec.kafka_credentials_secret,
        }
    )
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    if shared_env_from:
        # Bus and store endpoints (and credentials) are shared by every strategy: one Secret the chart owns.
        env_from.insert(0, {"secretRef": {"name": shared_env_from, "optional": True}})
    probe = {"periodSeconds": 10, "timeoutSeconds": 3}
    container: dict[str, Any] = {
        "name": "strategy",
        "image": image,
        "args": ["strategy"],
        "envFrom": env_from,
        # Both pinned, so a port in the shared environment can neither move the probes nor collide.
        "env": [
            {"name": "TRADEBOT_HTTP_PORT", "value": str(HTTP_PORT)},
            {"name": "TRADEBOT_METRICS_PORT", "value": str(METRICS_PORT)},
            *_kafka_credentials_env(spec),
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "livenessProbe": {**probe, "httpGet": {"path": "/livez", "port": "metrics"}, "failureThreshold": 3},
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "metrics"}, "failureThreshold": 2},
        "startupProbe": {**probe, "httpGet": {"path": "/livez", "port": "metrics"}, "failureThreshold": 30},
        "securityContext": _restricted_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    container["resources"] = spec.resources or DEFAULT_STRATEGY_RESOURCES
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{name}-strategy",
            "namespace": namespace,
            "labels": labels(name, COMPONENT_STRATEGY),
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
        },
        "spec": {
            "replicas": 0 if spec.suspend else spec.replicas,
            # One consumer per transactional id: never run old and new pods side by side.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(name, COMPONENT_STRATEGY)},
            "template": {
                "metadata": {
                    "labels": labels(name, COMPONENT_STRATEGY),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: config_hash,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                    },
                },
                "spec": {
                    **_hardened_pod_spec(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [_tmp_volume()],
                },
            },
        },
    }


def backtest_hash(spec: TradingStrategySpec) -> str:
    """What makes a new backtest necessary: the strategy parameters, the symbols and the backtest settings."""
    assert spec.backtest is not None
    return canonical_hash(
        {
            "params": spec.strategy_params().model_dump(mode="json"),
            "symbols": spec.symbols,
            # A sweep runs as a Job of its own: changing it reruns the sweep, not the backtest.
            "backtest": spec.backtest.model_dump(mode="json", exclude={"schedule", "sweep"}),
        },
        length=10,
    )


def sweep_hash(spec: TradingStrategySpec) -> str:
    """What makes a new sweep necessary: the parameters it does not sweep, the data, costs and the sweep."""
    assert spec.backtest is not None
    return canonical_hash(
        {
            "params": spec.strategy_params().model_dump(mode="json"),
            "backtest": spec.backtest.model_dump(mode="json", exclude={"schedule"}),
        },
        length=10,
    )


def backtest_args(spec: TradingStrategySpec, backtest: BacktestSpec, data_path: str) -> list[str]:
    """`tradebot backtest` arguments for the resource's parameters (the CLI contract scripts rely on)."""
    params = spec.strategy_params()
    args = ["backtest", "--data", data_path, *params.to_cli_args(), *_cost_args(backtest)]
    args += ["--json", "--result-file", RESULT_PATH]
    return args


def _cost_args(backtest: BacktestSpec) -> list[str]:
    return [
        "--fill",
        backtest.fill,
        "--commission-pct",
        f"{backtest.commission_pct:g}",
        "--slippage-bps",
        f"{backtest.slippage_bps:g}",
        "--initial-cash",
        f"{backtest.initial_cash:.15g}",
    ]


def sweep_args(spec: TradingStrategySpec, backtest: BacktestSpec, data_path: str) -> list[str]:
    """`tradebot sweep` arguments of one shard (its index comes from $JOB_COMPLETION_INDEX): the spec's
    parameters with the swept ones as ranges, its costs, and the shard's outputs (best rows as the
    termination message, the whole slice as JSON lines on stdout, which the operator reads from the log)."""
    assert backtest.sweep is not None
    sweep = backtest.sweep
    ranges = sweep.parameters.ranges()
    swept_flags = {"--" + field.replace("_", "-") for field in ranges}
    fixed = [arg for arg in spec.strategy_params().to_cli_args() if arg.split("=", 1)[0] not in swept_flags]
    args = ["sweep", "--data", data_path, *fixed]
    args += [f"--{field.replace('_', '-')}={values.cli()}" for field, values in ranges.items()]
    args += _cost_args(backtest)
    args += ["--metric", sweep.metric, "--top", str(sweep.top), "--shard-count", str(sweep.shards)]
    args += ["--result-file", RESULT_PATH, "--jsonl", "--no-progress"]
    return args


def _dataset(backtest: BacktestSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(volumes, mounts, the CSV's path in the container)."""
    volumes: list[dict[str, Any]] = [_tmp_volume()]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if backtest.dataset.config_map is not None:
        ref = backtest.dataset.config_map
        volumes.append(
            {"name": "dataset", "configMap": {"name": ref.name, "items": [{"key": ref.key, "path": ref.key}]}}
        )
        mounts.append({"name": "dataset", "mountPath": "/data", "readOnly": True})
        return volumes, mounts, f"/data/{ref.key}"
    assert backtest.dataset.path is not None
    return volumes, mounts, backtest.dataset.path


def _job_pod_spec(
    spec: TradingStrategySpec, backtest: BacktestSpec, image: str, *, sweep: bool = False
) -> dict[str, Any]:
    volumes, mounts, data_path = _dataset(backtest)
    container = COMPONENT_SWEEP if sweep else COMPONENT_BACKTEST
    args = sweep_args if sweep else backtest_args
    return {
        **_hardened_pod_spec(),
        "restartPolicy": "Never",
        "containers": [
            {
                "name": container,
                "image": image,
                "args": args(spec, backtest, data_path),
                # The result travels back in the pod status: no extra RBAC, no shared storage.
                "terminationMessagePath": RESULT_PATH,
                "terminationMessagePolicy": "File",
                "securityContext": _restricted_security_context(),
                "volumeMounts": mounts,
                "resources": spec.resources or DEFAULT_BACKTEST_RESOURCES,
            }
        ],
        "volumes": volumes,
    }


# The longest TradingStrategy name (the CRD says so): its CronJob `<name>-backtest` must stay within the 52
# characters Kubernetes allows a CronJob (it appends an 11-character suffix to each Job it creates), and a
# Job `<name>-backtest-<10-character hash>` within 63 (its name is a label value on its pods): 43 + 20.
MAX_NAME_LENGTH = 52 - len("-backtest")


def render_backtest_job(
    name: str, namespace: str, spec: TradingStrategySpec, *, default_image: str
) -> Manifest:
    """A Job per (resource, backtest-relevant spec): its name carries the hash, so a spec change makes a new one."""
    assert spec.backtest is not None
    digest = backtest_hash(spec)
    job_labels = {**labels(name, COMPONENT_BACKTEST), BACKTEST_HASH_LABEL: digest}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-backtest-{digest}", "namespace": namespace, "labels": job_labels},
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 86400,
            "activeDeadlineSeconds": 3600,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": _job_pod_spec(spec, spec.backtest, spec.image or default_image),
            },
        },
    }


def render_sweep_job(name: str, namespace: str, spec: TradingStrategySpec, *, default_image: str) -> Manifest:
    """One Indexed Job per (resource, sweep-relevant spec): pod i runs slice i of the grid; its name carries
    the hash (`<name>-sweep-<hash>`, at most 60 characters, so each pod's hostname `<job>-<index>` fits in
    63 with the at most two-digit index of at most 50 shards)."""
    assert spec.backtest is not None
    assert spec.backtest.sweep is not None
    digest = sweep_hash(spec)
    shards = spec.backtest.sweep.shards
    job_labels = {**labels(name, COMPONENT_SWEEP), SWEEP_HASH_LABEL: digest}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": sweep_job_name(name, digest), "namespace": namespace, "labels": job_labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": shards,
            # About one retry per shard (a pod evicted or OOM-killed), not unbounded.
            "backoffLimit": shards,
            "ttlSecondsAfterFinished": 86400,
            "activeDeadlineSeconds": 3600,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": _job_pod_spec(spec, spec.backtest, spec.image or default_image, sweep=True),
            },
        },
    }


def sweep_job_name(name: str, digest: str) -> str:
    return f"{name}-sweep-{digest}"


def sweep_configmap_name(name: str) -> str:
    return f"{name}-sweep"


def render_sweep_configmap(
    name: str, namespace: str, *, digest: str, metric: str, table_csv: str
) -> Manifest:
    """The full ranked table of a sweep (CSV, as `tradebot sweep --csv` writes it), with the hash of the spec
    it answers (the operator reads the shards' logs only while the hash differs)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": sweep_configmap_name(name),
            "namespace": namespace,
            "labels": {**labels(name, COMPONENT_SWEEP), SWEEP_HASH_LABEL: digest},
        },
        "data": {"hash": digest, "metric": metric, SWEEP_TABLE_KEY: table_csv},
    }


def backtest_cronjob_name(name: str) -> str:
    return f"{name}-backtest"


def render_backtest_cronjob(
    name: str, namespace: str, spec: TradingStrategySpec, *, default_image: str
) -> Manifest:
    """Scheduled backtests: Kubernetes' own CronJob runs them; the operator only reads their results."""
    assert spec.backtest is not None
    assert spec.backtest.schedule is not None
    digest = backtest_hash(spec)
    job_labels = {**labels(name, COMPONENT_BACKTEST), BACKTEST_HASH_LABEL: digest}
    job = render_backtest_job(name, namespace, spec, default_image=default_image)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": backtest_cronjob_name(name), "namespace": namespace, "labels": job_labels},
        "spec": {
            "schedule": spec.backtest.schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": job_labels}, "spec": job["spec"]},
        },
    }


def differs(desired: Mapping[str, Any], existing: Mapping[str, Any] | None) -> bool:
    """True when applying `desired` would change `existing` (only the fields we set are compared)."""
    if existing is None:
        return True
    return not _is_subset(desired, existing)


def _is_subset(desired: Any, existing: Any) -> bool:
    if isinstance(desired, Mapping):
        if not isinstance(existing, Mapping):
            return False
        return all(_is_subset(value, existing.get(key)) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(existing, list) or len(desired) != len(existing):
            return False
        return all(_is_subset(d, e) for d, e in zip(desired, existing, strict=True))
    return bool(desired == existing)
