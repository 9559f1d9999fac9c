"""The operator's RBAC as the chart renders it, applied to a real kube-apiserver and asked with
`kubectl auth can-i --list` as the operator's ServiceAccount (issue 14.6): exactly the verbs the code calls,
in exactly the namespaces it works in, and nothing else.

What the code calls (operator/tradebot/operator): kopf lists, watches and patches TradingStrategies (its
annotations and finalizer) and posts Events; `Kube` gets a strategy and merge-patches its status, gets and
server-side applies (create when absent, patch) the ConfigMap, Deployment and CronJob, gets and creates the
backtest Job; the indexes list and watch backtest Jobs and pods, the event handlers Deployments and
ConfigMaps; the shared-env Secret is read in the release's namespace and copied (get, apply) next to
strategies in other namespaces. Cluster-wide, kopf also watches CRDs (it notices the CRD changing); it
watches namespaces only when it is not cluster-wide, and the operator turns that scanning off when it has a
list of namespaces. Nothing is deleted by the operator: owner references let the garbage collector do it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts._helm import NAMESPACE, RELEASE, Manifest, render
from tests.plugins._proc import eventually
from tests.plugins.kube import KubeCluster
from tests.plugins.tradebot_operator import get_json, kubectl_ok, running_operator
from tradebot.operator.render import STRATEGY_LABEL

SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-operator"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
WATCHED = ("rbac-watched-a", "rbac-watched-b")
UNWATCHED = "rbac-unwatched"
SHARED_ENV = f"{RELEASE}-shared-env"
# Granted to every authenticated user by the API server's own bindings (system:basic-user).
SELF_REVIEWS = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}

# (resource, resource names) -> verbs: what `kubectl auth can-i --list` shows.
Grants = dict[tuple[str, str], frozenset[str]]


def _grants(rows: Mapping[str, str]) -> Grants:
    """`{"deployments.apps": "get list"}` (a `resource[name]` key limits it to that name) as Grants."""
    result: Grants = {}
    for key, verbs in rows.items():
        resource, _, names = key.partition("[")
        result[(resource, names.rstrip("]"))] = frozenset(verbs.split())
    return result


# Every namespace a strategy can live in: the objects it owns, its status, kopf's bookkeeping and Events.
STRATEGY_NAMESPACE = {
    "tradingstrategies.tradebot.dev": "get list watch patch",
    "tradingstrategies.tradebot.dev/status": "patch",
    "deployments.apps": "get list watch create patch",
    "configmaps": "get list watch create patch",
    "jobs.batch": "get list watch create",
    "cronjobs.batch": "get create patch",
    "pods": "list watch",
    "pods/log": "get",  # issue 17.3: a sweep shard's full table
    "events": "create",
}
# A strategy outside the release's namespace gets a copy of the shared-env Secret.
SECRET_COPIES = {"secrets": "get create patch"}
CLUSTER_WIDE = _grants(
    {**STRATEGY_NAMESPACE, **SECRET_COPIES, "customresourcedefinitions.apiextensions.k8s.io": "list watch"}
)
WATCHED_NAMESPACE = _grants({**STRATEGY_NAMESPACE, **SECRET_COPIES})
RELEASE_NAMESPACE_ONLY = _grants({f"secrets[{SHARED_ENV}]": "get"})


def can_i_list(cluster: KubeCluster, namespace: str, service_account: str = SERVICE_ACCOUNT) -> Grants:
    """`kubectl auth can-i --list` as the operator's ServiceAccount in `namespace` (cluster-scoped grants
    included), without the self-reviews every user has."""
    result = cluster.kubectl("auth", "can-i", "--list", f"--as={service_account}", "-n", namespace)
    assert result.returncode == 0, result.stderr
    grants: Grants = {}
    for line in result.stdout.splitlines()[1:]:
        match = re.match(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$", line)
        assert match is not None, line
        resource, urls, names, verbs = match.groups()
        if urls or resource in SELF_REVIEWS:
            continue  # non-resource URLs (discovery, /version) are every user's too
        key = (resource, names)
        grants[key] = grants.get(key, frozenset()) | frozenset(verbs.split())
    return grants


def can_i(cluster: KubeCluster, verb: str, resource: str, namespace: str) -> bool:
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl(
        "auth", "can-i", verb, resource, *extra, f"--as={SERVICE_ACCOUNT}", "-n", namespace
    )
    return result.stdout.strip() == "yes"


def operator_rbac(manifests: list[Manifest], component: str = "operator") -> list[Manifest]:
    """The operator's ServiceAccount, roles and bindings (or the uninstall hook's), not the other pods'."""
    return [
        m
        for m in manifests
        if m["kind"] in RBAC_KINDS and m["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]


@pytest.fixture
def rbac_cluster(kube_apiserver: KubeCluster, tradingstrategy_crd: Path) -> Iterator[KubeCluster]:
    """The API server with the CRD and the release's and the test's namespaces; the operator's RBAC is
    removed afterwards, so each test sees only what it applied."""
    for namespace in (NAMESPACE, *WATCHED, UNWATCHED):
        kube_apiserver.kubectl("create", "namespace", namespace)
    yield kube_apiserver
    ours = "app.kubernetes.io/component in (operator,uninstall)"
    for kind in ("clusterrolebindings", "clusterroles"):
        kube_apiserver.kubectl("delete", kind, "-l", ours)
    for namespace in (NAMESPACE, *WATCHED, UNWATCHED):
        kube_apiserver.kubectl("delete", "rolebindings,roles", "-l", ours, "-n", namespace)


def _apply_operator_rbac(cluster: KubeCluster, helm_bin: Path, *sets: str) -> list[Manifest]:
    rbac = operator_rbac(render(helm_bin, sets=sets))
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(rbac))
    assert result.returncode == 0, result.stderr
    return rbac


def format_table(tables: Mapping[str, Grants]) -> str:
    """The grants per namespace as a Markdown table (the closing note of issue 14 quotes it)."""
    keys = sorted({key for grants in tables.values() for key in grants})
    lines = ["| resource | " + " | ".join(tables) + " |", "|---" * (len(tables) + 1) + "|"]
    for resource, names in keys:
        label = f"{resource} [{names}]" if names else resource
        cells = [" ".join(sorted(grants.get((resource, names), ()))) or "-" for grants in tables.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_cluster_wide_grants_exactly_what_the_code_calls(rbac_cluster: KubeCluster, helm_bin: Path) -> None:
    rbac = _apply_operator_rbac(rbac_cluster, helm_bin)
    assert {m["kind"] for m in rbac} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    eventually(
        "the ClusterRoleBinding to take effect",
        lambda: can_i(rbac_cluster, "list", "tradingstrategies.tradebot.dev", UNWATCHED),
    )
    tables = {namespace: can_i_list(rbac_cluster, namespace) for namespace in (NAMESPACE, UNWATCHED)}
    print(format_table(tables))  # shown with -s: the can-i table of the closing note
    for namespace, grants in tables.items():
        assert grants == CLUSTER_WIDE, (namespace, format_table({namespace: grants}))
    # What the issue found granted and unused, asked one by one.
    for verb, resource in (
        ("delete", "deployments.apps"),
        ("delete", "configmaps"),
        ("delete", "jobs.batch"),
        ("delete", "cronjobs.batch"),
        ("patch", "jobs.batch"),
        ("list", "secrets"),
        ("create", "pods"),
        ("list", "namespaces"),
        ("create", "tradingstrategies.tradebot.dev"),
        ("delete", "tradingstrategies.tradebot.dev"),
        ("patch", "events.events.k8s.io"),
    ):
        assert not can_i(rbac_cluster, verb, resource, UNWATCHED), (verb, resource)


def test_watch_namespaces_grants_only_roles_in_those_namespaces(
    rbac_cluster: KubeCluster, helm_bin: Path
) -> None:
    rbac = _apply_operator_rbac(
        rbac_cluster, helm_bin, *(f"operator.watchNamespaces[{i}]={ns}" for i, ns in enumerate(WATCHED))
    )
    eventually(
        "the RoleBindings to take effect",
        lambda: can_i(rbac_cluster, "list", "tradingstrategies.tradebot.dev", WATCHED[1]),
    )
    tables = {
        namespace: can_i_list(rbac_cluster, namespace) for namespace in (*WATCHED, NAMESPACE, UNWATCHED)
    }
    print(format_table(tables))
    assert {m["kind"] for m in rbac} == {"ServiceAccount", "Role", "RoleBinding"}
    for namespace in WATCHED:
        assert tables[namespace] == WATCHED_NAMESPACE, (
            namespace,
            format_table({namespace: tables[namespace]}),
        )
    # The release's namespace: the shared-env Secret by name, to copy it; nothing in an unwatched one.
    assert tables[NAMESPACE] == RELEASE_NAMESPACE_ONLY, format_table({NAMESPACE: tables[NAMESPACE]})
    assert tables[UNWATCHED] == {}, format_table({UNWATCHED: tables[UNWATCHED]})
    assert not can_i(rbac_cluster, "get", "secrets", NAMESPACE)  # other Secrets of the release: no


def test_watch_namespaces_including_the_release_namespace(rbac_cluster: KubeCluster, helm_bin: Path) -> None:
    """Strategies next to the operator use the shared-env Secret itself: no copies, so no Secret writes there."""
    _apply_operator_rbac(rbac_cluster, helm_bin, f"operator.watchNamespaces[0]={NAMESPACE}")
    eventually(
        "the RoleBinding to take effect",
        lambda: can_i(rbac_cluster, "list", "tradingstrategies.tradebot.dev", NAMESPACE),
    )
    assert can_i_list(rbac_cluster, NAMESPACE) == {**_grants(STRATEGY_NAMESPACE), **RELEASE_NAMESPACE_ONLY}
    assert can_i_list(rbac_cluster, UNWATCHED) == {}


def test_the_uninstall_hook_may_only_list_and_delete_the_release_strategies(
    rbac_cluster: KubeCluster, helm_bin: Path
) -> None:
    """`helm uninstall`'s pre-delete hook (`tradebot operator --delete-strategies`, cleanup.py) lists and
    deletes the release's TradingStrategies, in the release's namespace, and does nothing else."""
    hook = operator_rbac(render(helm_bin), component="uninstall")
    assert {m["kind"] for m in hook} == {"ServiceAccount", "Role", "RoleBinding"}
    applied = rbac_cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(hook))
    assert applied.returncode == 0, applied.stderr
    account = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-uninstall"
    wanted = _grants({"tradingstrategies.tradebot.dev": "list delete"})
    eventually(
        "the RoleBinding to take effect", lambda: can_i_list(rbac_cluster, NAMESPACE, account) == wanted
    )
    assert can_i_list(rbac_cluster, UNWATCHED, account) == {}


def _strategy(name: str, backtest: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "tradebot.dev/v1alpha1",
            "kind": "TradingStrategy",
            "metadata": {"name": name},
            "spec": {"symbols": ["BTCUSDT"], "backtest": {"dataset": {"path": "/data/x.csv"}, **backtest}},
        }
    )


@pytest.mark.slow
def test_the_operator_runs_on_the_watch_namespaces_roles_alone(
    rbac_cluster: KubeCluster, helm_bin: Path, tmp_path: Path
) -> None:
    """The namespaced grants are not only minimal but enough: the operator, authenticated as the chart's
    ServiceAccount with only the Roles of watchNamespaces, runs a strategy in a watched namespace (objects,
    the shared-env copy, the backtest Job, its result, a CronJob) without one forbidden call, and leaves an
    unwatched namespace alone."""
    cluster = rbac_cluster
    _apply_operator_rbac(
        cluster, helm_bin, *(f"operator.watchNamespaces[{i}]={ns}" for i, ns in enumerate(WATCHED))
    )
    eventually(
        "the RoleBindings to take effect",
        lambda: can_i(cluster, "list", "tradingstrategies.tradebot.dev", WATCHED[0]),
    )
    shared = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SHARED_ENV},
        "stringData": {"X": "1"},
    }
    kubectl_ok(cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(shared))
    env = {
        "TRADEBOT_OPERATOR_NAMESPACES": json.dumps(list(WATCHED)),
        "TRADEBOT_OPERATOR_SHARED_ENV_SECRET": SHARED_ENV,
        "TRADEBOT_OPERATOR_SHARED_ENV_NAMESPACE": NAMESPACE,
    }
    watched, name = WATCHED[0], "rbac-run"
    with running_operator(cluster, tmp_path, (NAMESPACE, f"{RELEASE}-operator"), env):
        try:
            kubectl_ok(cluster, "apply", "-n", watched, "-f", "-", stdin=_strategy(name, {}))
            kubectl_ok(cluster, "apply", "-n", UNWATCHED, "-f", "-", stdin=_strategy(name, {}))
            for kind, object_name in (
                ("deployment", f"{name}-strategy"),
                ("configmap", f"{name}-strategy"),
                ("secret", f"{name}-shared-env"),
            ):
                eventually(
                    f"{kind} {object_name}", partial(get_json, cluster, kind, object_name, "-n", watched)
                )
            jobs = eventually(
                "the backtest Job",
                lambda: (
                    get_json(cluster, "jobs", "-n", watched, "-l", f"{STRATEGY_LABEL}={name}") or {}
                ).get("items"),
            )
            pods = eventually(
                "its pod",
                lambda: (
                    get_json(cluster, "pods", "-n", watched, "-l", f"job-name={jobs[0]['metadata']['name']}")
                    or {}
                ).get("items"),
            )
            _finish(cluster, watched, pods[0]["metadata"]["name"])
            eventually(
                "the result in the status",
                lambda: ((get_json(cluster, "ts", name, "-n", watched) or {}).get("status") or {}).get(
                    "backtest"
                ),
            )
            kubectl_ok(
                cluster, "apply", "-n", watched, "-f", "-", stdin=_strategy(name, {"schedule": "0 2 * * *"})
            )
            eventually("the CronJob", lambda: get_json(cluster, "cronjob", f"{name}-backtest", "-n", watched))
            # Nothing for the strategy the operator does not watch.
            unwatched = get_json(cluster, "ts", name, "-n", UNWATCHED)
            assert unwatched is not None
            assert not (unwatched.get("status") or {}).get("conditions")
            assert get_json(cluster, "deployment", f"{name}-strategy", "-n", UNWATCHED) is None
        finally:
            # While the operator runs: it removes its finalizer.
            cluster.kubectl("delete", "ts", name, "-n", watched, "--timeout=30s")
            cluster.kubectl("delete", "ts", name, "-n", UNWATCHED, "--wait=false")


def _finish(cluster: KubeCluster, namespace: str, pod: str) -> None:
    """Play the kubelet: the backtest container exited 0 with a result as its termination message."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = json.dumps({"stats": {"total_return_pct": 1.5, "n_trades": 1}})
    terminated = {
        "exitCode": 0,
        "reason": "Completed",
        "message": result,
        "startedAt": now,
        "finishedAt": now,
    }
    status = {
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "backtest",
                    "image": "i",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
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


FORGER = "forger"


@pytest.mark.slow
def test_the_backtest_guard_refuses_forged_backtest_pods_and_jobs(
    rbac_cluster: KubeCluster, helm_bin: Path
) -> None:
    """Issue 14.8, the rest: a pod that copies the Job's selector label is adopted by the Job, owner reference
    and all. The opt-in admission policy refuses labelled pods and Jobs to anyone but the controllers (here
    kube-controller-manager runs as `admin`) and the operator."""
    cluster = rbac_cluster
    guard = [
        m
        for m in render(
            helm_bin,
            sets=(
                "operator.backtestGuard.enabled=true",
                "operator.backtestGuard.podCreators={admin}",
                "operator.backtestGuard.jobCreators={admin}",
            ),
        )
        if m["kind"].startswith("ValidatingAdmissionPolicy")
    ]
    assert [m["kind"] for m in guard] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    namespace = UNWATCHED
    # Someone who may create pods and Jobs in a strategy's namespace, and nothing more.
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": FORGER, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": FORGER, "namespace": namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "patch"]},
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": FORGER, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FORGER},
            "subjects": [{"kind": "ServiceAccount", "name": FORGER, "namespace": namespace}],
        },
    ]
    kubectl_ok(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all([*guard, *rbac]))
    forger = f"--as=system:serviceaccount:{namespace}:{FORGER}"
    labels = {STRATEGY_LABEL: "victim", "tradebot.dev/backtest-hash": "0123456789"}

    def pod(name: str, pod_labels: dict[str, str]) -> str:
        spec = {"containers": [{"name": "backtest", "image": "ghcr.io/tradebot/tradebot:0.1.0"}]}
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": pod_labels},
                "spec": spec,
            }
        )

    def create(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl("create", "-n", namespace, *args, "-f", "-", stdin=stdin)

    def forge() -> subprocess.CompletedProcess[str] | None:
        result = create(forger, stdin=pod("forged", labels))
        if result.returncode == 0:  # before the policy took effect
            cluster.kubectl("delete", "pod", "forged", "-n", namespace, "--wait=false", "--grace-period=0")
            return None
        return None if "AlreadyExists" in result.stderr else result

    # The policy takes effect within moments of its binding.
    refused = eventually("the policy to refuse a labelled pod", forge)
    assert "only the Job controller creates backtest pods" in refused.stderr
    assert create(forger, stdin=pod("unlabelled", {"app": "x"})).returncode == 0
    relabelled = cluster.kubectl(
        "label", "pod", "unlabelled", "-n", namespace, "tradebot.dev/backtest-hash=0123456789", forger
    )
    assert relabelled.returncode != 0
    assert "only the Job controller" in relabelled.stderr
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "forged", "labels": labels},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {**json.loads(pod("x", {}))["spec"], "restartPolicy": "Never"},
            }
        },
    }
    refused_job = create(forger, stdin=json.dumps(job))
    assert refused_job.returncode != 0
    assert "only the tradebot operator, the CronJob controller and cluster admins" in refused_job.stderr
    # The controllers' identity passes.
    assert create(stdin=pod("by-the-controller", labels)).returncode == 0
    for kind in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
        cluster.kubectl("delete", kind, "-l", "app.kubernetes.io/component=operator")
    cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--wait=false")
