"""A namespace per test; the CRD and the operator process come from tests/plugins/tradebot_operator.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.plugins.kube import KubeCluster
from tests.plugins.tradebot_operator import kubectl_ok


@pytest.fixture
def namespace(kube_apiserver: KubeCluster) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    kubectl_ok(kube_apiserver, "create", "namespace", name)
    yield name
    # TradingStrategies first, while the operator that holds their finalizers still runs (a test module's
    # operator stops right after its last test); then the rest, without waiting.
    kube_apiserver.kubectl("delete", "tradingstrategies", "--all", "-n", name, "--timeout=30s")
    kube_apiserver.kubectl("delete", "namespace", name, "--wait=false")
