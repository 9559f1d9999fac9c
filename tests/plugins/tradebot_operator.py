"""The operator under test, for every test that needs it: the committed CRD installed in the real API
server, and `tradebot operator` as a subprocess authenticated as the ServiceAccount of
manifests/operator/rbac.yaml (a real token, so every call it makes passes through that RBAC).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.plugins._proc import REPO_ROOT, ServerProcess, eventually, free_port, http_ok
from tests.plugins.kube import KubeCluster, wait_crd_established, write_kubeconfig

MANIFESTS = REPO_ROOT / "manifests"
CRD_FILE = MANIFESTS / "crds" / "tradingstrategies.tradebot.dev.yaml"


def kubectl_ok(cluster: KubeCluster, *args: str, stdin: str | None = None) -> str:
    result = cluster.kubectl(*args, stdin=stdin)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def get_json(cluster: KubeCluster, *args: str) -> dict[str, Any] | None:
    """`kubectl get ... -o json`, or None when the object does not exist."""
    result = cluster.kubectl("get", *args, "-o", "json")
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)} failed: {result.stderr}")
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture(scope="session")
def tradingstrategy_crd(kube_apiserver: KubeCluster) -> Path:
    """The committed CRD, installed and established."""
    kubectl_ok(kube_apiserver, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_crd_established(kube_apiserver, "tradingstrategies.tradebot.dev")
    # Discovery catches up a moment after Established: wait until kubectl resolves the short name.
    eventually(
        "`kubectl get ts` to resolve", lambda: kube_apiserver.kubectl("get", "ts", "-A").returncode == 0
    )
    return CRD_FILE


@dataclass(frozen=True)
class Operator:
    process: ServerProcess
    metrics_port: int

    def metric(self, name: str, **labels: str) -> float:
        """The sum of every series of `name` (with its labels or without) on the operator's /metrics; with
        `labels`, of the series carrying each of them."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((f"{name}{{", f"{name} ")) and all(label in line for label in wanted)
        )

    def api_writes(self) -> float:
        return self.metric("tradebot_operator_api_writes_total")


@contextmanager
def running_operator(
    cluster: KubeCluster, workdir: Path, service_account: tuple[str, str], env: Mapping[str, str] = {}
) -> Iterator[Operator]:
    """`tradebot operator` as a subprocess authenticated as `service_account` (namespace, name), with `env`
    added to its environment; stopped on exit, after checking it never hit a permission it lacks."""
    namespace, name = service_account
    kubeconfig = workdir / "kubeconfig"
    token = kubectl_ok(cluster, "create", "token", name, "-n", namespace, "--duration=2h").strip()
    write_kubeconfig(kubeconfig, cluster.server, cluster.ca_file, token, user=name)
    liveness_port, metrics_port = free_port(), free_port()
    process = ServerProcess(
        "tradebot-operator",
        [sys.executable, "-m", "tradebot.cli", "operator"],
        workdir,
        env={
            **{key: value for key, value in os.environ.items() if not key.startswith("TRADEBOT_OPERATOR_")},
            "KUBECONFIG": str(kubeconfig),
            "HOME": str(workdir),
            "TRADEBOT_OPERATOR_LIVENESS_PORT": str(liveness_port),
            "TRADEBOT_OPERATOR_METRICS_PORT": str(metrics_port),
            "TRADEBOT_OPERATOR_HOST": "127.0.0.1",
            "TRADEBOT_OPERATOR_STRATEGY_IMAGE": "ghcr.io/tradebot/tradebot:0.1.0",
            **env,
        },
        cwd=REPO_ROOT,
    )
    try:
        process.wait_until(
            "/healthz", lambda: http_ok(f"http://127.0.0.1:{liveness_port}/healthz"), timeout=60
        )
        yield Operator(process, metrics_port)
    finally:
        process.stop()
        log = process.log_path.read_text(errors="replace")
        # The operator never hit a permission it lacks (a namespace being deleted is another kind of forbidden).
        assert "forbidden: User" not in log, process.log_tail(60)
        assert "Not enough permissions" not in log, process.log_tail(60)


@pytest.fixture(scope="module")
def operator(
    kube_apiserver: KubeCluster, tradingstrategy_crd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    for manifest in ("namespace.yaml", "rbac.yaml"):
        kubectl_ok(kube_apiserver, "apply", "-f", str(MANIFESTS / "operator" / manifest))
    workdir = tmp_path_factory.mktemp("operator")
    with running_operator(kube_apiserver, workdir, ("tradebot-system", "tradebot-operator")) as running:
        yield running
