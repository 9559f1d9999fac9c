"""The test Kubernetes API server and helm that `make tools` builds behave like the real thing."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.plugins.kube import KubeCluster, kubectl_json, pinned_version, wait_crd_established

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.infra.tests.tradebot.dev
spec:
  group: infra.tests.tradebot.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
                colour: {type: string}
"""


def _deployment(name: str, selector_app: str, template_app: str) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": selector_app}},
                "template": {
                    "metadata": {"labels": {"app": template_app}},
                    "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
                },
            },
        }
    )


def _eventually(what: str, condition: Callable[[], bool], timeout: float = 90.0) -> None:
    """Waits for a controller's work to show; the timeout only bounds a hang, it measures nothing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.5)


@pytest.fixture
def namespace(kube_apiserver: KubeCluster) -> Iterator[str]:
    name = f"infra-{uuid.uuid4().hex[:8]}"
    created = kube_apiserver.kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    yield name
    kube_apiserver.kubectl("delete", "namespace", name, "--wait=false")


def test_api_server_reports_the_pinned_version(kube_apiserver: KubeCluster) -> None:
    version = kubectl_json(kube_apiserver, "version")
    server_version = version["serverVersion"]
    assert isinstance(server_version, dict)
    assert server_version["gitVersion"] == pinned_version("KUBERNETES")


def test_custom_resource_round_trips_and_its_schema_is_enforced(
    kube_apiserver: KubeCluster, namespace: str
) -> None:
    created = kube_apiserver.kubectl("apply", "-f", "-", stdin=WIDGET_CRD)
    assert created.returncode == 0, created.stderr
    wait_crd_established(kube_apiserver, "widgets.infra.tests.tradebot.dev")

    widget = {
        "apiVersion": "infra.tests.tradebot.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "sprocket", "namespace": namespace},
        "spec": {"size": 3, "colour": "teal"},
    }
    applied = kube_apiserver.kubectl("apply", "-f", "-", stdin=json.dumps(widget))
    assert applied.returncode == 0, applied.stderr
    read_back = kubectl_json(kube_apiserver, "get", "widget", "sprocket", "-n", namespace)
    assert read_back["spec"] == {"size": 3, "colour": "teal"}

    too_small = {**widget, "metadata": {"name": "speck", "namespace": namespace}, "spec": {"size": 0}}
    rejected = kube_apiserver.kubectl("apply", "-f", "-", stdin=json.dumps(too_small))
    assert rejected.returncode != 0
    assert "spec.size" in rejected.stderr


def test_server_side_dry_run_accepts_a_valid_deployment_and_rejects_an_invalid_one(
    kube_apiserver: KubeCluster, namespace: str
) -> None:
    valid = kube_apiserver.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=_deployment("web", "web", "web")
    )
    assert valid.returncode == 0, valid.stderr
    assert "deployment.apps/web created (server dry run)" in valid.stdout
    # A dry run stores nothing.
    missing = kube_apiserver.kubectl("get", "deployment", "web", "-n", namespace)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr

    # The selector must match the pod template's labels: only the API server's validation knows.
    invalid = kube_apiserver.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=_deployment("web", "web", "other")
    )
    assert invalid.returncode != 0
    assert "does not match template" in invalid.stderr


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(
    kube_apiserver: KubeCluster, namespace: str
) -> None:
    if "garbagecollector" not in kube_apiserver.controllers:
        pytest.skip("kube-controller-manager is not running (only outside CI)")
    owner = kubectl_json(kube_apiserver, "create", "configmap", "owner", "-n", namespace)
    metadata = owner["metadata"]
    assert isinstance(metadata, dict)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": metadata["uid"]}
            ],
        },
    }
    applied = kube_apiserver.kubectl("apply", "-f", "-", stdin=json.dumps(dependent))
    assert applied.returncode == 0, applied.stderr

    deleted = kube_apiserver.kubectl("delete", "configmap", "owner", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr
    _eventually(
        "garbage collection of the dependent ConfigMap",
        lambda: kube_apiserver.kubectl("get", "configmap", "dependent", "-n", namespace).returncode != 0,
    )
    gone = kube_apiserver.kubectl("get", "configmap", "dependent", "-n", namespace)
    assert "NotFound" in gone.stderr


def test_job_controller_creates_the_jobs_pod(kube_apiserver: KubeCluster, namespace: str) -> None:
    if "job" not in kube_apiserver.controllers:
        pytest.skip("kube-controller-manager is not running (only outside CI)")
    created = kube_apiserver.kubectl(
        "create", "job", "once", "--image=busybox:1.36", "-n", namespace, "--", "true"
    )
    assert created.returncode == 0, created.stderr

    def pod_names() -> list[str]:
        pods = kubectl_json(kube_apiserver, "get", "pods", "-n", namespace, "-l", "job-name=once")
        items = pods["items"]
        assert isinstance(items, list)
        return [item["metadata"]["name"] for item in items]

    _eventually("a pod for the Job", lambda: len(pod_names()) > 0)
    # No kubelet here: the pod exists but is never scheduled or run.
    assert all(name.startswith("once-") for name in pod_names())


def test_helm_reports_the_pinned_version(helm_bin: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(helm_bin), "version", "--template", "{{ .Version }}"],
        capture_output=True,
        text=True,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == pinned_version("HELM")
