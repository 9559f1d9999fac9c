"""Fixtures for the operator's tests against the real API server: the CRD, a namespace per test."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins._proc import REPO_ROOT
from tests.plugins.kube import KubeCluster

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


def eventually(what: str, probe: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25) -> Any:
    """Polls until `probe` returns something truthy and returns it; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s (last: {value!r})")
        time.sleep(interval)


@pytest.fixture(scope="session")
def tradingstrategy_crd(kube_apiserver: KubeCluster) -> Path:
    """The committed CRD, installed and established."""
    kubectl_ok(kube_apiserver, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl_ok(
        kube_apiserver,
        "wait",
        "--for=condition=Established",
        "crd/tradingstrategies.tradebot.dev",
        "--timeout=60s",
    )
    # Discovery catches up a moment after Established: wait until kubectl resolves the short name.
    eventually(
        "`kubectl get ts` to resolve", lambda: kube_apiserver.kubectl("get", "ts", "-A").returncode == 0
    )
    return CRD_FILE


@pytest.fixture
def namespace(kube_apiserver: KubeCluster) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    kubectl_ok(kube_apiserver, "create", "namespace", name)
    yield name
    kube_apiserver.kubectl("delete", "namespace", name, "--wait=false")
