"""Rendering the chart with the real helm binary, and walking what it rendered."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.plugins._proc import REPO_ROOT

CHART = REPO_ROOT / "charts" / "tradebot"
VALUES_DIR = Path(__file__).resolve().parent / "values"
RELEASE = "tradebot"
NAMESPACE = "tradebot-test"
MONITORING_API = "monitoring.coreos.com/v1"

Manifest = dict[str, Any]


def helm(helm_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs helm; never raises on a non-zero exit (check `returncode`)."""
    return subprocess.run(
        [str(helm_bin), *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT
    )


def template_args(
    *values_files: str, api_versions: tuple[str, ...] = (), sets: tuple[str, ...] = ()
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for name in values_files:
        args += ["-f", str(VALUES_DIR / name)]
    for api in api_versions:
        args += ["--api-versions", api]
    for assignment in sets:
        args += ["--set", assignment]
    return args


def render_text(
    helm_bin: Path, *values_files: str, api_versions: tuple[str, ...] = (), sets: tuple[str, ...] = ()
) -> str:
    result = helm(helm_bin, *template_args(*values_files, api_versions=api_versions, sets=sets))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def render(
    helm_bin: Path, *values_files: str, api_versions: tuple[str, ...] = (), sets: tuple[str, ...] = ()
) -> list[Manifest]:
    text = render_text(helm_bin, *values_files, api_versions=api_versions, sets=sets)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kinds(manifests: list[Manifest]) -> list[str]:
    return [m["kind"] for m in manifests]


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest, *, init: bool = True) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec["containers"]
    if init:
        yield from spec.get("initContainers", [])


def component(manifest: Manifest) -> str:
    value: str = manifest["metadata"]["labels"]["app.kubernetes.io/component"]
    return value


def find(manifests: list[Manifest], kind: str, component_name: str) -> Manifest:
    for manifest in by_kind(manifests, kind):
        if manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component_name:
            return manifest
    raise AssertionError(f"no {kind} for component {component_name!r} in {kinds(manifests)}")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value (a string) or valueFrom (a dict)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
