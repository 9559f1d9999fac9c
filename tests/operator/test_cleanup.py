"""`tradebot operator --delete-strategies`, the chart's pre-delete hook, against a real API server: run as
the hook's ServiceAccount with the chart's own hook Role, it deletes the release's TradingStrategies and
returns once the running operator has removed kopf's finalizer from them; with nobody to remove a
finalizer it fails at its deadline instead of letting `helm uninstall` hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts._helm import CHART, helm
from tests.plugins._proc import REPO_ROOT, eventually
from tests.plugins.kube import KubeCluster, write_kubeconfig
from tests.plugins.tradebot_operator import MANIFESTS, Operator, get_json, kubectl_ok

pytestmark = pytest.mark.slow

RELEASE = "rel"
RELEASE_LABELS = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/name": "tradebot"}


def _strategy(name: str, labels: dict[str, str], finalizers: list[str] | None = None) -> str:
    document: dict[str, Any] = yaml.safe_load((MANIFESTS / "examples" / "sma-basic.yaml").read_text())
    document["metadata"] = {"name": name, "labels": labels}
    if finalizers:
        document["metadata"]["finalizers"] = finalizers
    return yaml.safe_dump(document)


def _hook_kubeconfig(cluster: KubeCluster, helm_bin: Path, namespace: str, path: Path) -> list[str]:
    """Applies the chart's hook ServiceAccount, Role and RoleBinding; returns the Job's args and writes a
    kubeconfig with the hook ServiceAccount's token (so every call passes through the chart's RBAC)."""
    result = helm(
        helm_bin,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--show-only",
        "templates/uninstall-hook.yaml",
        "--set",
        "operator.uninstallHook.timeoutSeconds=60",
    )
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    rbac = [doc for doc in documents if doc["kind"] != "Job"]
    kubectl_ok(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(rbac))
    (job,) = [doc for doc in documents if doc["kind"] == "Job"]
    token = kubectl_ok(
        cluster, "create", "token", job["spec"]["template"]["spec"]["serviceAccountName"], "-n", namespace
    ).strip()
    write_kubeconfig(path, cluster.server, cluster.ca_file, token, user="uninstall-hook")
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _run_hook(args: list[str], kubeconfig: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    return subprocess.run(
        [sys.executable, "-m", "tradebot.cli", *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=REPO_ROOT,
    )


def test_the_hook_deletes_the_release_strategies_once_the_operator_finalized_them(
    kube_apiserver: KubeCluster, operator: Operator, helm_bin: Path, namespace: str, tmp_path: Path
) -> None:
    for name in ("rel-a", "rel-b"):
        kubectl_ok(kube_apiserver, "apply", "-n", namespace, "-f", "-", stdin=_strategy(name, RELEASE_LABELS))
    # Another release's, and one a user made: not the hook's to delete.
    kubectl_ok(
        kube_apiserver,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=_strategy("other", {**RELEASE_LABELS, "app.kubernetes.io/instance": "other"}),
    )

    # The operator's daemon holds kopf's finalizer on each: what blocked `helm uninstall`.
    def finalizers(name: str) -> list[str]:
        found: list[str] = (
            (get_json(kube_apiserver, "ts", name, "-n", namespace) or {}).get("metadata") or {}
        ).get("finalizers") or []
        return found

    for name in ("rel-a", "rel-b", "other"):
        eventually(f"kopf's finalizer on {name}", partial(finalizers, name), timeout=60)
    args = _hook_kubeconfig(kube_apiserver, helm_bin, namespace, tmp_path / "kubeconfig")

    result = _run_hook(args, tmp_path / "kubeconfig")

    assert result.returncode == 0, result.stdout + result.stderr
    # Gone when the command returns, not merely marked for deletion.
    assert get_json(kube_apiserver, "ts", "rel-a", "-n", namespace) is None
    assert get_json(kube_apiserver, "ts", "rel-b", "-n", namespace) is None
    other = get_json(kube_apiserver, "ts", "other", "-n", namespace)
    assert other is not None
    assert "deletionTimestamp" not in other["metadata"]
    assert '"message": "deleted"' in result.stdout


def test_the_hook_fails_at_its_deadline_when_no_operator_removes_the_finalizer(
    kube_apiserver: KubeCluster, tradingstrategy_crd: Path, helm_bin: Path, namespace: str, tmp_path: Path
) -> None:
    # A finalizer nobody removes stands for a stopped operator's.
    hold = "tradebot.dev/test-hold"
    kubectl_ok(
        kube_apiserver, "apply", "-n", namespace, "-f", "-", stdin=_strategy("held", RELEASE_LABELS, [hold])
    )
    args = _hook_kubeconfig(kube_apiserver, helm_bin, namespace, tmp_path / "kubeconfig")
    try:
        result = _run_hook(args, tmp_path / "kubeconfig", "--timeout", "2")

        assert result.returncode == 1, result.stdout + result.stderr
        assert "held" in result.stdout, result.stdout
        assert "still exist after 2s" in result.stdout, result.stdout
        held = get_json(kube_apiserver, "ts", "held", "-n", namespace)
        assert held is not None
        assert "deletionTimestamp" in held["metadata"]
    finally:
        kube_apiserver.kubectl(
            "patch", "ts", "held", "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )
