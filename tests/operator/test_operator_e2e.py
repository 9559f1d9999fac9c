"""The operator end to end: `tradebot operator` as a subprocess, authenticated as the ServiceAccount of
manifests/operator/rbac.yaml (the `operator` fixture of tests/plugins/tradebot_operator.py), against a real
API server with the controllers but no kubelet: the tests play the kubelet by patching pod status.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tests.plugins._proc import eventually
from tests.plugins.kube import KubeCluster
from tests.plugins.tradebot_operator import MANIFESTS, Operator, get_json, kubectl_ok
from tradebot.operator import render
from tradebot.operator.spec import TradingStrategySpec

pytestmark = pytest.mark.slow

SA = "system:serviceaccount:tradebot-system:tradebot-operator"
EXAMPLES = MANIFESTS / "examples"
CSV = "timestamp,open,high,low,close,volume\n2024-01-01,1,1,1,1,1\n2024-01-02,1,1,1,1,1\n"
RESULT = {
    "stats": {
        "total_return_pct": 12.5,
        "sharpe": 1.25,
        "max_drawdown_pct": -7.5,
        "win_rate_pct": 55.0,
        "n_trades": 8,
        "buy_hold_return_pct": 3.0,
        "equity_final": 112500.0,
        "bars": 2,
    },
    "trades": [],
    "params": {},
}


def _apply(cluster: KubeCluster, namespace: str, document: dict[str, Any]) -> None:
    kubectl_ok(cluster, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(document))


def _example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def _condition(resource: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for condition in ((resource or {}).get("status") or {}).get("conditions") or ():
        if condition["type"] == type_:
            result: dict[str, Any] = condition
            return result
    return None


def _job_pod(cluster: KubeCluster, namespace: str, job: str) -> str:
    pods = eventually(
        f"a pod for Job {job}",
        lambda: (get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={job}") or {}).get("items"),
    )
    name: str = pods[0]["metadata"]["name"]
    return name


def _terminate_pod(
    cluster: KubeCluster,
    namespace: str,
    pod: str,
    *,
    exit_code: int,
    message: str,
    container: str = "backtest",
) -> None:
    """Play the kubelet: the container ran and exited with `message` as its termination message."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container,
                    "image": "ghcr.io/tradebot/tradebot:0.1.0",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "message": message,
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
    }
    kubectl_ok(
        cluster,
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def _mark_pods_ready(cluster: KubeCluster, namespace: str, selector: str) -> None:
    """Play the kubelet for the strategy pods: running and ready."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pods = eventually(
        "strategy pods",
        lambda: (get_json(cluster, "pods", "-n", namespace, "-l", selector) or {}).get("items"),
    )
    for pod in pods:
        status = {
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            }
        }
        kubectl_ok(
            cluster,
            "patch",
            "pod",
            pod["metadata"]["name"],
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        )


def test_service_account_has_exactly_the_grants_it_needs(
    kube_apiserver: KubeCluster, tradingstrategy_crd: Path
) -> None:
    for manifest in ("namespace.yaml", "rbac.yaml"):
        kubectl_ok(kube_apiserver, "apply", "-f", str(MANIFESTS / "operator" / manifest))

    def can(verb: str, resource: str) -> bool:
        resource, _, subresource = resource.partition("/")
        extra = [f"--subresource={subresource}"] if subresource else []
        result = kube_apiserver.kubectl(
            "auth", "can-i", verb, resource, *extra, f"--as={SA}", "-n", "default"
        )
        return result.stdout.strip() == "yes"

    # The authorizer's RBAC cache catches up with a fresh binding within moments.
    eventually("the ClusterRoleBinding to take effect", lambda: can("list", "tradingstrategies.tradebot.dev"))
    allowed = [
        ("list", "tradingstrategies.tradebot.dev"),
        ("watch", "tradingstrategies.tradebot.dev"),
        ("patch", "tradingstrategies.tradebot.dev"),
        ("patch", "tradingstrategies.tradebot.dev/status"),
        ("create", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("watch", "deployments.apps"),
        ("create", "configmaps"),
        ("patch", "configmaps"),
        ("watch", "configmaps"),
        ("create", "jobs.batch"),
        ("watch", "jobs.batch"),
        ("create", "cronjobs.batch"),
        ("patch", "cronjobs.batch"),
        ("watch", "pods"),
        ("get", "pods/log"),
        ("create", "events"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    denied = [
        ("delete", "tradingstrategies.tradebot.dev"),
        ("create", "tradingstrategies.tradebot.dev"),
        ("update", "tradingstrategies.tradebot.dev"),
        ("delete", "deployments.apps"),
        ("get", "secrets"),
        ("create", "pods"),
        ("patch", "pods"),
        ("delete", "jobs.batch"),
        ("delete", "configmaps"),
        ("patch", "events"),
        ("get", "pods"),
        ("create", "pods/exec"),
        ("get", "pods/exec"),
        ("list", "namespaces"),
        ("get", "tradingstrategies.tradebot.dev/status"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ]
    for verb, resource in allowed + denied:
        assert can(verb, resource) == ((verb, resource) in allowed), (verb, resource)


def test_operator_deployment_manifest_is_restricted_and_pinned() -> None:
    deployment = yaml.safe_load((MANIFESTS / "operator" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/tradebot/tradebot:0.1.0"
    assert container["command"] == ["tradebot", "operator"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "healthz", "containerPort": 8080} in container["ports"]
    assert pod["serviceAccountName"] == "tradebot-operator"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "tradebot:latest" not in (MANIFESTS / "operator" / "deployment.yaml").read_text()


def test_strategy_lifecycle_params_rollout_suspend_and_readiness(
    kube_apiserver: KubeCluster, operator: Operator, namespace: str
) -> None:
    cluster = kube_apiserver
    strategy = _example("ema-risk.yaml")
    _apply(cluster, namespace, strategy)
    resource = get_json(cluster, "ts", "ema-risk", "-n", namespace)
    assert resource is not None
    uid = resource["metadata"]["uid"]

    deployment = eventually(
        "the strategy Deployment",
        lambda: get_json(cluster, "deployment", "ema-risk-strategy", "-n", namespace),
    )
    configmap = eventually(
        "the strategy ConfigMap", lambda: get_json(cluster, "configmap", "ema-risk-strategy", "-n", namespace)
    )

    def applied_events() -> set[str]:
        events = get_json(
            cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=ema-risk"
        )
        assert events is not None
        return {e["message"] for e in events["items"] if e["reason"] == "Applied"}

    # Every action is a Kubernetes Event on the resource: one for the objects applied together.
    eventually(
        "an Applied event naming the ConfigMap and the Deployment",
        lambda: "ConfigMap ema-risk-strategy, Deployment ema-risk-strategy applied" in applied_events(),
    )
    for owned in (deployment, configmap):
        (reference,) = owned["metadata"]["ownerReferences"]
        assert (reference["kind"], reference["name"], reference["uid"], reference["controller"]) == (
            "TradingStrategy",
            "ema-risk",
            uid,
            True,
        )
        labels = owned["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "ema-risk"
        assert labels["app.kubernetes.io/managed-by"] == "tradebot-operator"
        assert labels["app.kubernetes.io/component"] == "strategy"
    params = json.loads(configmap["data"]["TRADEBOT_STRATEGY_PARAMS"])
    assert (params["ma_type"], params["short_window"], params["long_window"], params["stop_loss_pct"]) == (
        "ema",
        12,
        26,
        2,
    )
    assert params["allow_short"] is True
    assert params["sizing"] == {"kind": "risk-pct", "value": 1.0}
    assert configmap["data"]["TRADEBOT_STRATEGY_SYMBOLS"] == "BTCUSDT,ETHUSDT"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "ghcr.io/tradebot/tradebot:0.1.0"
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    first_hash = deployment["spec"]["template"]["metadata"]["annotations"][render.CONFIG_HASH_ANNOTATION]

    # No kubelet: the pods never become ready, so the resource is not Ready.
    not_ready = eventually(
        "Ready=False", lambda: _condition(get_json(cluster, "ts", "ema-risk", "-n", namespace), "Ready")
    )
    assert not_ready["status"] == "False"

    # Readiness follows the Deployment's real availability.
    _mark_pods_ready(
        cluster, namespace, "app.kubernetes.io/instance=ema-risk,app.kubernetes.io/component=strategy"
    )
    ready = eventually(
        "Ready=True",
        lambda: (
            (c := _condition(get_json(cluster, "ts", "ema-risk", "-n", namespace), "Ready"))
            and c["status"] == "True"
            and c
        ),
    )
    assert ready["reason"] == "Available"
    table = kubectl_ok(cluster, "get", "ts", "ema-risk", "-n", namespace)
    assert table.splitlines()[1].split()[5] == "True"

    # A spec change rolls the pods: the config hash moves and the ConfigMap holds the new parameters.
    kubectl_ok(
        cluster,
        "patch",
        "ts",
        "ema-risk",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"shortWindow": 8}}',
    )

    def rolled() -> dict[str, Any] | None:
        live = get_json(cluster, "deployment", "ema-risk-strategy", "-n", namespace)
        annotations = (live or {})["spec"]["template"]["metadata"].get("annotations") or {}
        return live if annotations.get(render.CONFIG_HASH_ANNOTATION) not in (None, first_hash) else None

    eventually("a new config hash", rolled)
    configmap = get_json(cluster, "configmap", "ema-risk-strategy", "-n", namespace)
    assert configmap is not None
    assert json.loads(configmap["data"]["TRADEBOT_STRATEGY_PARAMS"])["short_window"] == 8

    # Suspend scales to zero and says so.
    kubectl_ok(
        cluster,
        "patch",
        "ts",
        "ema-risk",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"suspend": true}}',
    )
    eventually(
        "replicas 0",
        lambda: (
            (get_json(cluster, "deployment", "ema-risk-strategy", "-n", namespace) or {})["spec"]["replicas"]
            == 0
        ),
    )
    suspended = eventually(
        "Ready=False/Suspended",
        lambda: (
            (c := _condition(get_json(cluster, "ts", "ema-risk", "-n", namespace), "Ready"))
            and c["reason"] == "Suspended"
            and c
        ),
    )
    assert suspended["status"] == "False"
    final = eventually(
        "status for the newest generation",
        lambda: (
            (r := get_json(cluster, "ts", "ema-risk", "-n", namespace))
            and r["status"].get("observedGeneration") == r["metadata"]["generation"]
            and r
        ),
    )
    assert final["metadata"]["generation"] == 3

    # Idle: nothing changes, so the operator writes nothing.
    time.sleep(1.0)  # let the Deployment controller's own status updates settle
    before = (
        get_json(cluster, "ts", "ema-risk", "-n", namespace),
        get_json(cluster, "deployment", "ema-risk-strategy", "-n", namespace),
        get_json(cluster, "configmap", "ema-risk-strategy", "-n", namespace),
    )
    writes = operator.api_writes()
    time.sleep(5.0)
    after = (
        get_json(cluster, "ts", "ema-risk", "-n", namespace),
        get_json(cluster, "deployment", "ema-risk-strategy", "-n", namespace),
        get_json(cluster, "configmap", "ema-risk-strategy", "-n", namespace),
    )
    assert operator.api_writes() == writes
    assert [obj["metadata"]["resourceVersion"] for obj in after if obj] == [
        obj["metadata"]["resourceVersion"] for obj in before if obj
    ]


def _backtested(cluster: KubeCluster, namespace: str) -> tuple[dict[str, Any], str]:
    kubectl_ok(
        cluster, "create", "configmap", "prices", "-n", namespace, "--from-literal", f"ohlcv.csv={CSV}"
    )
    _apply(cluster, namespace, _example("backtest-configmap.yaml"))
    jobs = eventually(
        "the backtest Job",
        lambda: (
            get_json(cluster, "jobs", "-n", namespace, "-l", "app.kubernetes.io/instance=sma-backtested")
            or {}
        ).get("items"),
    )
    (job,) = jobs
    running = eventually(
        "BacktestSucceeded=Unknown",
        lambda: _condition(get_json(cluster, "ts", "sma-backtested", "-n", namespace), "BacktestSucceeded"),
    )
    assert (running["status"], running["reason"]) == ("Unknown", "Running")
    return job, _job_pod(cluster, namespace, job["metadata"]["name"])


def test_backtest_job_result_lands_in_the_status(
    kube_apiserver: KubeCluster, operator: Operator, namespace: str
) -> None:
    cluster = kube_apiserver
    # The restricted Pod Security Standard, enforced: the Job controller could not create a pod that breaks it.
    kubectl_ok(cluster, "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    job, pod = _backtested(cluster, namespace)
    name = job["metadata"]["name"]
    assert name.startswith("sma-backtested-backtest-")
    # Issue 14.9: the pod as the API server stored it, token-less, bounded and restricted.
    created = get_json(cluster, "pod", pod, "-n", namespace)
    assert created is not None
    assert created["spec"]["automountServiceAccountToken"] is False
    assert created["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (backtest_container,) = created["spec"]["containers"]
    assert backtest_container["resources"] == render.DEFAULT_BACKTEST_RESOURCES
    assert backtest_container["securityContext"]["readOnlyRootFilesystem"] is True
    assert not any(
        "serviceaccount" in mount["mountPath"] for mount in backtest_container.get("volumeMounts", [])
    )
    (reference,) = job["metadata"]["ownerReferences"]
    assert reference["kind"] == "TradingStrategy"
    spec = job["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    assert args[:3] == ["backtest", "--data", "/data/ohlcv.csv"]
    for flag, value in (
        ("--short-window", "20"),
        ("--long-window", "50"),
        ("--stop-loss-pct", "5"),
        ("--sizing", "equity-pct:50"),
    ):
        assert f"{flag}={value}" in args
    joined = " ".join(args)
    for part in (
        "--fill next-open",
        "--commission-pct 0.1",
        "--slippage-bps 5",
        "--initial-cash 100000",
        "--json --result-file /dev/termination-log",
    ):
        assert part in joined
    assert spec["volumes"][1]["configMap"]["name"] == "prices"

    _terminate_pod(cluster, namespace, pod, exit_code=0, message=json.dumps(RESULT, separators=(",", ":")))
    done = eventually(
        "BacktestSucceeded=True",
        lambda: (
            (r := get_json(cluster, "ts", "sma-backtested", "-n", namespace))
            and (c := _condition(r, "BacktestSucceeded"))
            and c["status"] == "True"
            and r
        ),
    )
    backtest = done["status"]["backtest"]
    assert backtest["jobName"] == name
    assert (backtest["totalReturnPct"], backtest["sharpe"], backtest["maxDrawdownPct"]) == (12.5, 1.25, -7.5)
    assert (backtest["nTrades"], backtest["winRatePct"]) == (8, 55.0)
    assert backtest["finishedAt"]
    row = kubectl_ok(cluster, "get", "ts", "sma-backtested", "-n", namespace).splitlines()[1].split()
    assert row[6:8] == ["12.5", "1.25"]


def test_a_forged_backtest_pod_is_ignored(
    kube_apiserver: KubeCluster, operator: Operator, namespace: str
) -> None:
    """Issue 14.8: a pod anyone created with the backtest's labels and a fake result does not speak for the
    strategy; only a pod the operator's Job controls (owner reference to the Job's uid) does."""
    cluster = kube_apiserver
    job, real_pod = _backtested(cluster, namespace)
    real = get_json(cluster, "pod", real_pod, "-n", namespace)
    assert real is not None
    (owner,) = real["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"])
    # Every label the operator reads or used to trust (job-name, the spec hash, managed-by, the strategy);
    # not the Job's selector (controller-uid), with which the Job controller would adopt the pod (see below).
    labels = {
        key: value for key, value in real["metadata"]["labels"].items() if not key.endswith("controller-uid")
    }
    assert labels["job-name"] == job["metadata"]["name"]
    forged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "forged-backtest", "labels": labels},
        "spec": {"containers": [{"name": "backtest", "image": "ghcr.io/tradebot/tradebot:0.1.0"}]},
    }
    _apply(cluster, namespace, forged)
    fake = json.loads(json.dumps(RESULT))
    fake["stats"]["total_return_pct"] = 999.0
    _terminate_pod(cluster, namespace, "forged-backtest", exit_code=0, message=json.dumps(fake))

    def backtest_condition() -> dict[str, Any]:
        condition = _condition(
            get_json(cluster, "ts", "sma-backtested", "-n", namespace), "BacktestSucceeded"
        )
        assert condition is not None
        return condition

    # The operator is woken by the forged pod's events within a second; it must keep saying Running.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert backtest_condition()["reason"] == "Running"
        time.sleep(0.5)

    _terminate_pod(cluster, namespace, real_pod, exit_code=0, message=json.dumps(RESULT))
    eventually("BacktestSucceeded=True", lambda: backtest_condition()["status"] == "True")
    resource = get_json(cluster, "ts", "sma-backtested", "-n", namespace)
    assert resource is not None
    backtest = resource["status"]["backtest"]
    assert (backtest["totalReturnPct"], backtest["jobName"]) == (12.5, job["metadata"]["name"])
    forged_now = get_json(cluster, "pod", "forged-backtest", "-n", namespace)
    assert forged_now is not None
    assert not forged_now["metadata"].get("ownerReferences")


def test_failed_backtest_says_why(kube_apiserver: KubeCluster, operator: Operator, namespace: str) -> None:
    cluster = kube_apiserver
    _, pod = _backtested(cluster, namespace)
    _terminate_pod(
        cluster,
        namespace,
        pod,
        exit_code=2,
        message="tradebot backtest: error: /data/ohlcv.csv holds 1 bar(s)",
    )
    failed = eventually(
        "BacktestSucceeded=False",
        lambda: (
            (c := _condition(get_json(cluster, "ts", "sma-backtested", "-n", namespace), "BacktestSucceeded"))
            and c["status"] == "False"
            and c
        ),
    )
    assert failed["reason"] == "BacktestFailed"
    assert "holds 1 bar(s)" in failed["message"]


def test_schedule_makes_a_cronjob(kube_apiserver: KubeCluster, operator: Operator, namespace: str) -> None:
    cluster = kube_apiserver
    _apply(cluster, namespace, _example("backtest-nightly.yaml"))
    cronjob = eventually(
        "the backtest CronJob", lambda: get_json(cluster, "cronjob", "ema-nightly-backtest", "-n", namespace)
    )
    assert cronjob["spec"]["schedule"] == "0 2 * * *"
    args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["backtest", "--data", "/opt/tradebot/data/historical_data.csv"]
    assert "--ma=ema" in args
    deployment = eventually(
        "the suspended Deployment",
        lambda: get_json(cluster, "deployment", "ema-nightly-strategy", "-n", namespace),
    )
    assert deployment["spec"]["replicas"] == 0
    jobs = get_json(cluster, "jobs", "-n", namespace)
    assert jobs is not None
    assert jobs["items"] == []

    # A run of the CronJob (as its schedule would start it): its Job is controlled by the CronJob, which the
    # TradingStrategy controls, so its pod's result is trusted (issue 14.8).
    kubectl_ok(
        cluster, "create", "job", "ema-nightly-run", "--from=cronjob/ema-nightly-backtest", "-n", namespace
    )
    run = get_json(cluster, "job", "ema-nightly-run", "-n", namespace)
    assert run is not None
    assert run["metadata"]["ownerReferences"][0]["uid"] == cronjob["metadata"]["uid"]
    _terminate_pod(
        cluster,
        namespace,
        _job_pod(cluster, namespace, "ema-nightly-run"),
        exit_code=0,
        message=json.dumps(RESULT),
    )
    done = eventually(
        "the scheduled run's result",
        lambda: ((get_json(cluster, "ts", "ema-nightly", "-n", namespace) or {}).get("status") or {}).get(
            "backtest"
        ),
    )
    assert (done["jobName"], done["totalReturnPct"]) == ("ema-nightly-run", 12.5)


def test_specs_the_api_server_or_the_model_refuse_are_permanent_errors_in_ready(
    kube_apiserver: KubeCluster, operator: Operator, namespace: str
) -> None:
    """Issue 14.13: they used to be TemporaryErrors retried every 5 s forever; now Ready says why, nothing is
    retried, and fixing the spec recovers."""
    cluster = kube_apiserver
    name = "refused"

    def apply(spec: dict[str, Any]) -> None:
        manifest = {
            "apiVersion": "tradebot.dev/v1alpha1",
            "kind": "TradingStrategy",
            "metadata": {"name": name},
        }
        _apply(cluster, namespace, {**manifest, "spec": {"symbols": ["BTCUSDT"], **spec}})

    def ready() -> dict[str, Any] | None:
        return _condition(get_json(cluster, "ts", name, "-n", namespace), "Ready")

    def invalid_ready(fragment: str) -> dict[str, Any] | None:
        condition = ready()
        return condition if condition and fragment in condition["message"] else None

    # A resource name the CRD lets through but the API server refuses in the Deployment (422).
    apply({"resources": {"requests": {"gpu": 1}}})
    refused = eventually("Ready=False naming the refused resource", lambda: invalid_ready("gpu"))
    assert (refused["status"], refused["reason"]) == ("False", "InvalidSpec")
    assert "the API server refused" in refused["message"]
    # Neither the handler nor the daemon retries it: no temporary error in two retry delays.
    temporary = operator.metric("tradebot_operator_errors_total", kind="temporary")
    time.sleep(2 * 5.0 + 1)
    assert operator.metric("tradebot_operator_errors_total", kind="temporary") == temporary
    assert ready() == refused

    # A request above its limit, and an hour the CRD's pattern takes but no cron does: the model refuses.
    apply({"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "256Mi"}}})
    eventually("Ready=False on the request above its limit", lambda: invalid_ready("must not exceed"))
    apply({"backtest": {"dataset": {"path": "/data/x.csv"}, "schedule": "0 25 * * *"}})
    eventually("Ready=False on the hour 25", lambda: invalid_ready("'25' is out of range for the hour"))

    # Fixed: the objects are applied and Ready follows the Deployment again.
    apply({"resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "256Mi"}}})
    eventually("the Deployment", lambda: get_json(cluster, "deployment", f"{name}-strategy", "-n", namespace))
    eventually(
        "Ready no longer InvalidSpec", lambda: (c := ready()) is not None and c["reason"] != "InvalidSpec"
    )


def _valid_strategies(cluster: KubeCluster) -> int:
    """TradingStrategies anywhere whose spec the operator accepts: what it manages."""
    listed = get_json(cluster, "ts", "-A")
    assert listed is not None
    count = 0
    for item in listed["items"]:
        try:
            TradingStrategySpec.model_validate(item["spec"])
        except ValidationError:
            continue
        count += 1
    return count


def test_managed_strategies_gauge_falls_when_a_strategy_is_deleted(
    kube_apiserver: KubeCluster, operator: Operator, namespace: str
) -> None:
    cluster = kube_apiserver
    gauge = "tradebot_operator_managed_strategies"
    for name in ("gauge-a", "gauge-b"):
        strategy = _example("sma-basic.yaml")
        strategy["metadata"] = {"name": name}
        _apply(cluster, namespace, strategy)
    for name in ("gauge-a", "gauge-b"):
        eventually(
            f"{name}'s Deployment",
            partial(get_json, cluster, "deployment", f"{name}-strategy", "-n", namespace),
        )
    eventually("the gauge to count both", lambda: operator.metric(gauge) == _valid_strategies(cluster))
    both = operator.metric(gauge)

    kubectl_ok(cluster, "delete", "ts", "gauge-a", "-n", namespace, "--timeout=60s")
    eventually(
        "the gauge to fall by one",
        lambda: operator.metric(gauge) == both - 1 == _valid_strategies(cluster),
    )


def test_owned_objects_edited_or_deleted_by_hand_are_applied_again(
    kube_apiserver: KubeCluster, operator: Operator, namespace: str
) -> None:
    cluster = kube_apiserver
    _apply(cluster, namespace, _example("sma-basic.yaml"))
    deployment_name = configmap_name = "sma-basic-strategy"

    def deployment() -> dict[str, Any] | None:
        return get_json(cluster, "deployment", deployment_name, "-n", namespace)

    def configmap() -> dict[str, Any] | None:
        return get_json(cluster, "configmap", configmap_name, "-n", namespace)

    original = eventually("the strategy Deployment", deployment)
    eventually(
        "the spec handled",
        lambda: (
            (r := get_json(cluster, "ts", "sma-basic", "-n", namespace))
            and r.get("status", {}).get("observedGeneration") == r["metadata"]["generation"]
        ),
    )
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]
    params = eventually("the strategy ConfigMap", configmap)["data"]["TRADEBOT_STRATEGY_PARAMS"]

    # Edited by hand: scaled up, another image.
    kubectl_ok(cluster, "scale", "deployment", deployment_name, "-n", namespace, "--replicas=3")
    kubectl_ok(
        cluster, "set", "image", f"deployment/{deployment_name}", "-n", namespace, "strategy=evil:latest"
    )
    eventually(
        "the Deployment back to the spec",
        lambda: (
            (d := deployment())
            and d["spec"]["replicas"] == 1
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        ),
    )
    # Deleted by hand.
    kubectl_ok(cluster, "delete", "deployment", deployment_name, "-n", namespace, "--timeout=60s")
    recreated = eventually(
        "the Deployment again",
        lambda: (d := deployment()) and d["metadata"]["uid"] != original["metadata"]["uid"] and d,
    )
    (reference,) = recreated["metadata"]["ownerReferences"]
    assert (reference["kind"], reference["name"]) == ("TradingStrategy", "sma-basic")

    # The ConfigMap, edited and deleted by hand.
    kubectl_ok(
        cluster, "patch", "configmap", configmap_name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"data": {"TRADEBOT_STRATEGY_PARAMS": "{}"}}),
    )  # fmt: skip
    eventually(
        "the ConfigMap's parameters back",
        lambda: (c := configmap()) and c["data"]["TRADEBOT_STRATEGY_PARAMS"] == params,
    )
    uid = (configmap() or {})["metadata"]["uid"]
    kubectl_ok(cluster, "delete", "configmap", configmap_name, "-n", namespace)
    eventually("the ConfigMap again", lambda: (c := configmap()) and c["metadata"]["uid"] != uid)

    # Each repair is a Warning event on the resource.
    def repairs() -> list[str]:
        events = get_json(
            cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=sma-basic"
        )
        return [e["message"] for e in (events or {}).get("items", []) if e["reason"] == "DriftRepaired"]

    eventually(
        "DriftRepaired events for both kinds",
        lambda: {m.split(" ", 1)[0] for m in repairs()} == {"Deployment", "ConfigMap"},
    )


BLOCK_LABEL = "tradebot.test/block-status"
BLOCKED = "status writes are blocked by the test"


def _refusals(operator: Operator) -> int:
    """How often the operator's log reports a write the test's admission policy refused."""
    return operator.process.log_path.read_text(errors="replace").count(BLOCKED)


def _status_writes_blocked(cluster: KubeCluster, namespace: str) -> str:
    """A ValidatingAdmissionPolicy that refuses status writes of TradingStrategies in `namespace` labelled
    BLOCK_LABEL: a stand-in for an API server that fails the operator's write."""
    name = f"block-status-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [render.GROUP],
                        "apiVersions": [render.VERSION],
                        "operations": ["UPDATE"],
                        "resources": [f"{render.PLURAL}/status"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"!has(object.metadata.labels) || !('{BLOCK_LABEL}' in object.metadata.labels)",
                    "message": BLOCKED,
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    for document in (policy, binding):
        kubectl_ok(cluster, "apply", "-f", "-", stdin=json.dumps(document))
    return name


def test_a_backtest_result_the_api_server_refused_is_written_once_it_accepts(
    kube_apiserver: KubeCluster, operator: Operator, namespace: str
) -> None:
    """The result arrives with a pod's watch events; a status write that fails then is retried, not dropped
    (kopf ignores an event handler's error: the old handler lost the result until the next pod event)."""
    cluster = kube_apiserver
    _, pod = _backtested(cluster, namespace)
    policy = _status_writes_blocked(cluster, namespace)
    try:
        kubectl_ok(cluster, "label", "ts", "sma-backtested", "-n", namespace, f"{BLOCK_LABEL}=true")
        # The policy is in force once a status write of ours is refused.
        eventually(
            "a refused status write",
            lambda: BLOCKED in cluster.kubectl(
                "patch", "ts", "sma-backtested", "-n", namespace, "--subresource=status", "--type=merge",
                "-p", '{"status": {"observedGeneration": 1}}',
            ).stderr,
        )  # fmt: skip
        refusals = _refusals(operator)
        _terminate_pod(
            cluster, namespace, pod, exit_code=0, message=json.dumps(RESULT, separators=(",", ":"))
        )
        eventually("the operator's status write to be refused", lambda: _refusals(operator) > refusals)
        # No watch event will come again: the Job controller is done with the pod and the Job.
        job = (get_json(cluster, "pod", pod, "-n", namespace) or {})["metadata"]["labels"]["job-name"]
        eventually(
            "the Job complete and its pod released",
            lambda: (
                (p := get_json(cluster, "pod", pod, "-n", namespace))
                and not p["metadata"].get("finalizers")
                and (j := get_json(cluster, "job", job, "-n", namespace))
                and any(c["type"] == "Complete" for c in j.get("status", {}).get("conditions", []))
            ),
        )
        kubectl_ok(cluster, "label", "ts", "sma-backtested", "-n", namespace, f"{BLOCK_LABEL}-")
        done = eventually(
            "BacktestSucceeded=True after the refusal",
            lambda: (
                (r := get_json(cluster, "ts", "sma-backtested", "-n", namespace))
                and (c := _condition(r, "BacktestSucceeded"))
                and c["status"] == "True"
                and r
            ),
        )
        assert done["status"]["backtest"]["totalReturnPct"] == 12.5
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", policy)
        cluster.kubectl("delete", "validatingadmissionpolicy", policy)
