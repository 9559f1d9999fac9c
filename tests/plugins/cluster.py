"""The local single-node Kubernetes cluster for tests/cluster: the same scripts as `make cluster`.

One cluster per session (its ports are fixed, one per machine): `.ci/cluster/images.sh` builds (or finds
cached) every image, `.ci/cluster/up.sh --no-chart` starts the node, and `.ci/cluster/down.sh` undoes it all
at the session's end. A cluster already running (a developer's `make cluster`) is reused and left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.plugins._proc import REPO_ROOT, missing_component, tools_dir

CLUSTER_SCRIPTS = REPO_ROOT / ".ci" / "cluster"
LOCAL_VALUES = CLUSTER_SCRIPTS / "values-local.yaml"
CHART = REPO_ROOT / "charts" / "tradebot"
RELEASE = "tradebot"
STRATEGY_SELECTOR = "app.kubernetes.io/component=strategy"
NAMESPACE = "tradebot"
NODE_TOOLS = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
    "kube-router", "coredns", "helm", "pause",
)  # fmt: skip


@dataclass(frozen=True)
class LocalCluster:
    """A running node and its admin kubeconfig."""

    kubeconfig: Path
    helm_path: Path
    state: Path

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl as cluster admin; never raises on a non-zero exit (check `returncode`)."""
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kubectl_ok(self, *args: str, stdin: str | None = None, timeout: float = 120.0) -> str:
        """kubectl's stdout; fails the test with kubectl's stderr when it exits non-zero."""
        result = self.kubectl(*args, stdin=stdin, timeout=timeout)
        if result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stderr}", pytrace=False)
        return result.stdout

    def get(self, *args: str) -> dict[str, Any]:
        """`kubectl get ... -o json`, parsed."""
        parsed: dict[str, Any] = json.loads(self.kubectl_ok("get", *args, "-o", "json"))
        return parsed

    def helm(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Runs helm against the cluster; never raises on a non-zero exit."""
        return subprocess.run(
            [str(self.helm_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO_ROOT,
        )


def _script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRADEBOT_TOOLS_DIR": str(tools_dir())}
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=REPO_ROOT,
    )


def _already_running(state: Path) -> bool:
    pid_file = state / "pids" / "kube-apiserver.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """A real node (containerd, kubelet, kube-proxy, kube-router, CoreDNS) with every image imported."""
    if os.geteuid() != 0:
        missing_component("the local cluster needs root (kubelet, containerd, iptables)")
    bin_dir = tools_dir() / "bin"
    missing = [name for name in NODE_TOOLS if not (bin_dir / name).exists()]
    if missing:
        missing_component(f"{', '.join(missing)} not installed: run `make tools` (.ci/tools/cluster.sh)")
    state = tools_dir() / "cluster"
    reused = _already_running(state)
    images = _script("images.sh", timeout=3600)
    if images.returncode != 0:
        pytest.fail(f"building the images failed:\n{images.stdout}\n{images.stderr}", pytrace=False)
    up = _script("up.sh", "--no-chart", timeout=900)
    try:
        if up.returncode != 0:
            pytest.fail(f"the cluster did not start:\n{up.stdout}\n{up.stderr}", pytrace=False)
        yield LocalCluster(kubeconfig=state / "kubeconfig", helm_path=bin_dir / "helm", state=state)
    finally:
        if not reused:
            down = _script("down.sh", timeout=300)
            assert down.returncode == 0, f"make cluster-down failed:\n{down.stdout}\n{down.stderr}"


@pytest.fixture(scope="session")
def tradebot_release(local_cluster: LocalCluster) -> LocalCluster:
    """The chart installed as release `tradebot` in namespace `tradebot`, every pod Ready (helm --wait)."""
    result = local_cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "-f", str(LOCAL_VALUES), "--wait", "--timeout", "10m",
    )  # fmt: skip
    if result.returncode != 0:
        pods = local_cluster.kubectl("get", "pods", "-A", "-o", "wide").stdout
        pytest.fail(f"helm install failed:\n{result.stderr}\n{pods}", pytrace=False)
    # helm waits for the chart's own workloads only: the default strategy's Deployment is the operator's,
    # made after the operator starts, so wait for it (and every other strategy) to be Available too.
    deadline = time.monotonic() + 300
    while not local_cluster.get("deployments", "-n", NAMESPACE, "-l", STRATEGY_SELECTOR)["items"]:
        if time.monotonic() > deadline:
            pytest.fail("the operator made no strategy Deployment within 300 s", pytrace=False)
        time.sleep(2)
    ready = local_cluster.kubectl(
        "wait", "-n", NAMESPACE, "--for=condition=Available", "deployment", "-l", STRATEGY_SELECTOR,
        "--timeout=300s", timeout=310,
    )  # fmt: skip
    if ready.returncode != 0:
        pods = local_cluster.kubectl("get", "pods", "-A", "-o", "wide").stdout
        pytest.fail(
            f"the strategy Deployments did not become Available:\n{ready.stderr}\n{pods}", pytrace=False
        )
    return local_cluster


PROBE_IMAGE = "localhost/tradebot/probe:bookworm"


@contextmanager
def probe_pod(
    cluster: LocalCluster, name: str, namespace: str, labels: dict[str, str] | None = None
) -> Iterator[str]:
    """A pod with kcat and python3 (`kubectl exec` into it), deleted on exit; yields its name."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": PROBE_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "128Mi"}},
                }
            ],
        },
    }  # fmt: skip
    cluster.kubectl_ok("apply", "-f", "-", stdin=json.dumps(manifest))
    try:
        cluster.kubectl_ok(
            "wait", "-n", namespace, "--for=condition=Ready", f"pod/{name}", "--timeout=120s", timeout=130
        )
        yield name
    finally:
        cluster.kubectl("delete", "pod", name, "-n", namespace, "--grace-period=0", "--wait=false")


def tcp_reachable(cluster: LocalCluster, pod: str, namespace: str, host: str, port: int) -> bool:
    """Whether `pod` can open a TCP connection to host:port (3 s), asked inside the pod."""
    script = (
        "import socket, sys\n"
        f"try:\n    socket.create_connection(({host!r}, {port}), timeout=3).close()\n"
        "except OSError as error:\n    print(error); sys.exit(1)\n"
    )
    return (
        cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", script, timeout=30).returncode
        == 0
    )
