"""`make bench`: the operator against a real API server: 1,000 TradingStrategy resources applied at once
(issue 17, item 7), the time until every Deployment exists, the API writes per resource (target: at most 3),
then 60 s idle and the writes it made (target: 0), and the operator's memory.

`TRADEBOT_BENCH_OPERATOR_RESOURCES` changes the count."""

from __future__ import annotations

import copy
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.plugins.kube import KubeCluster
from tests.plugins.tradebot_operator import MANIFESTS, Operator, kubectl_ok

N = int(os.environ.get("TRADEBOT_BENCH_OPERATOR_RESOURCES", "1000"))
IDLE_S = 60
MAX_WRITES_PER_RESOURCE = 3


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, MiB, from /proc."""
    fields = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return fields["VmRSS"], fields["VmHWM"]


def writes_by_kind(operator: Operator) -> dict[str, float]:
    import urllib.request

    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    )
    return {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tradebot_operator_api_writes_total{")
    }


WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")  # APPLY: server-side apply


def server_writes(cluster: KubeCluster) -> dict[str, float]:
    """Writes the API server has answered, by `resource[/subresource] VERB` (its apiserver_request_total):
    every client's, kopf's own bookkeeping and Events included, not only what the operator counts."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        key = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key += f" {labels['verb']}"
        found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


@pytest.mark.timeout(2400)
def test_resources_applied_at_once_then_idle(kube_apiserver: KubeCluster, operator: Operator) -> None:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl_ok(kube_apiserver, "create", "namespace", namespace)
    example = yaml.safe_load((MANIFESTS / "examples" / "sma-basic.yaml").read_text())
    documents = []
    for i in range(N):
        document = copy.deepcopy(example)
        document["metadata"] = {"name": f"strategy-{i:04d}", "namespace": namespace}
        document["spec"]["shortWindow"] = 5 + i % 10
        documents.append(document)
    writes_before, by_kind_before = operator.api_writes(), writes_by_kind(operator)
    server_before = server_writes(kube_apiserver)
    start = time.perf_counter()
    # `create`: one POST per resource (`apply` would read each first), so the clock measures the operator.
    kubectl_ok(kube_apiserver, "create", "-f", "-", stdin=yaml.safe_dump_all(documents))
    applied = time.perf_counter() - start

    def deployments() -> int:
        out = kube_apiserver.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout
        return len(out.split())

    while deployments() < N:
        assert time.perf_counter() - start < 1500, f"only {deployments()} of {N} Deployments after 1500 s"
        time.sleep(0.5)
    all_deployed = time.perf_counter() - start
    settled_writes = operator.api_writes()
    # The controller manager keeps creating ReplicaSets and pods for a while, and the operator mirrors
    # each Deployment's availability into the status: wait until its writes stop for 15 s, then count
    # what the idle operator writes.
    settle_start, last_count, quiet_since = time.perf_counter(), operator.api_writes(), time.perf_counter()
    while time.perf_counter() - quiet_since < 15 and time.perf_counter() - settle_start < 240:
        time.sleep(1)
        count = operator.api_writes()
        if count != last_count:
            last_count, quiet_since = count, time.perf_counter()
    settled_after = time.perf_counter() - start
    settle_by_kind = {k: v - by_kind_before.get(k, 0.0) for k, v in writes_by_kind(operator).items()}
    writes_per_resource = (operator.api_writes() - writes_before) / N
    server_after = server_writes(kube_apiserver)
    by_server = {
        key: round((value - server_before.get(key, 0.0)) / N, 2)
        for key, value in sorted(server_after.items())
        if value - server_before.get(key, 0.0) >= N / 10
    }
    idle_start, by_kind_start = operator.api_writes(), writes_by_kind(operator)
    time.sleep(IDLE_S)
    idle_writes = operator.api_writes() - idle_start
    by_kind = {k: v - by_kind_start.get(k, 0.0) for k, v in writes_by_kind(operator).items()}
    rss, peak = memory_mib(operator.process.popen.pid)
    print(
        f"\n== operator: {N} TradingStrategy resources ==\n"
        f"kubectl create took {applied:.1f} s; every Deployment existed after {all_deployed:.1f} s "
        f"({N / all_deployed:.1f} resources/s); {settled_writes - writes_before:.0f} API writes to get there\n"
        f"settled (no writes for 15 s) {settled_after:.0f} s after the apply\n"
        f"API writes per resource until settled: {writes_per_resource:.2f} (target at most "
        f"{MAX_WRITES_PER_RESOURCE}) { ({k: v for k, v in settle_by_kind.items() if v}) }\n"
        f"the API server's writes per resource until settled, every client's (kubectl's create, the controllers', "
        f"kopf's own bookkeeping and Events): {by_server}\n"
        f"writes during {IDLE_S} s idle: {idle_writes:.0f} (target 0) { ({k: v for k, v in by_kind.items() if v}) }\n"
        f"operator memory: {rss:.0f} MiB resident, {peak:.0f} MiB peak"
    )
    assert idle_writes == 0
    assert writes_per_resource <= MAX_WRITES_PER_RESOURCE
    # Waited for (the operator still runs to release the finalizers): deleting 1,000 strategies and what they
    # own kept the API server and the controllers busy through the next benchmarks of make bench.
    deleted = kube_apiserver.kubectl("delete", "namespace", namespace, "--timeout=900s", timeout=960)
    assert deleted.returncode == 0, deleted.stderr
