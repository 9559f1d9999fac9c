"""`make bench`: the operator against a real API server: 200 TradingStrategy resources applied at once,
the time until every Deployment exists; then 60 s idle and the writes it made (target: 0)."""

from __future__ import annotations

import copy
import time
import uuid

import yaml

from tests.operator.conftest import MANIFESTS, kubectl_ok, tradingstrategy_crd  # noqa: F401 - fixtures
from tests.operator.test_operator_e2e import Operator, operator  # noqa: F401 - fixture
from tests.plugins.kube import KubeCluster

N = 200
IDLE_S = 60


def test_200_resources_then_idle(kube_apiserver: KubeCluster, operator: Operator) -> None:  # noqa: F811
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl_ok(kube_apiserver, "create", "namespace", namespace)
    example = yaml.safe_load((MANIFESTS / "examples" / "sma-basic.yaml").read_text())
    documents = []
    for i in range(N):
        document = copy.deepcopy(example)
        document["metadata"] = {"name": f"strategy-{i:03d}", "namespace": namespace}
        document["spec"]["shortWindow"] = 5 + i % 10
        documents.append(document)
    writes_before = operator.api_writes()
    start = time.perf_counter()
    kubectl_ok(kube_apiserver, "apply", "-f", "-", stdin=yaml.safe_dump_all(documents))
    applied = time.perf_counter() - start

    def deployments() -> int:
        out = kube_apiserver.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout
        return len(out.split())

    while deployments() < N:
        assert time.perf_counter() - start < 600, f"only {deployments()} of {N} Deployments after 600 s"
        time.sleep(0.5)
    all_deployed = time.perf_counter() - start
    settled_writes = operator.api_writes()
    # Let the status updates that follow creation settle, then count what an idle operator writes.
    time.sleep(10)
    idle_start = operator.api_writes()
    time.sleep(IDLE_S)
    idle_writes = operator.api_writes() - idle_start
    print(
        f"\n== operator: {N} TradingStrategy resources ==\n"
        f"kubectl apply took {applied:.1f} s; every Deployment existed after {all_deployed:.1f} s "
        f"({N / all_deployed:.1f} resources/s); {settled_writes - writes_before:.0f} API writes to get there\n"
        f"writes during {IDLE_S} s idle: {idle_writes:.0f} (target 0)"
    )
    assert idle_writes == 0
    kube_apiserver.kubectl("delete", "namespace", namespace, "--wait=false")
