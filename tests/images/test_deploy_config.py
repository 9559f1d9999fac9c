"""skaffold.yaml, the kind cluster config and the README's "Run on kind" section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins._proc import REPO_ROOT

SKAFFOLD = REPO_ROOT / "skaffold.yaml"
KIND_CONFIG = REPO_ROOT / "manifests" / "kind-config.yaml"
EXPECTED_ARTIFACTS = {
    "ghcr.io/tradebot/tradebot": "services/Dockerfile",
    "ghcr.io/tradebot/tradebot-dashboard": "services/Dockerfile.dashboard",
}


def _skaffold() -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(SKAFFOLD.read_text()) if d]
    assert len(documents) == 1
    config: dict[str, Any] = documents[0]
    return config


def _sanitized(image: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def test_skaffold_api_version() -> None:
    config = _skaffold()
    assert re.fullmatch(r"skaffold/v4beta\d+", config["apiVersion"]), config["apiVersion"]
    assert config["kind"] == "Config"


def test_skaffold_artifacts_match_the_dockerfiles() -> None:
    artifacts = _skaffold()["build"]["artifacts"]
    found = {a["image"]: a["docker"]["dockerfile"] for a in artifacts}
    assert found == EXPECTED_ARTIFACTS
    for artifact in artifacts:
        assert artifact["context"] == "."
        assert (REPO_ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()


def _releases(deploy: dict[str, Any]) -> list[dict[str, Any]]:
    releases: list[dict[str, Any]] = deploy["helm"]["releases"]
    return releases


@pytest.mark.parametrize("profile", [None, "kind"])
def test_skaffold_helm_release_uses_the_chart_and_built_images(profile: str | None) -> None:
    config = _skaffold()
    deploy = (
        config["deploy"]
        if profile is None
        else next(p for p in config["profiles"] if p["name"] == profile).get("deploy", config["deploy"])
    )
    (release,) = _releases(deploy)
    assert release["chartPath"] == "charts/tradebot"
    assert (REPO_ROOT / release["chartPath"] / "Chart.yaml").is_file()
    templates = release["setValueTemplates"]
    for image, key in (
        ("ghcr.io/tradebot/tradebot", "image"),
        ("ghcr.io/tradebot/tradebot-dashboard", "dashboardImage"),
    ):
        assert templates[f"{key}.repository"] == f"{{{{.IMAGE_REPO_{_sanitized(image)}}}}}"
        assert templates[f"{key}.tag"] == f"{{{{.IMAGE_TAG_{_sanitized(image)}}}}}"


def test_skaffold_port_forwards_match_chart_services(helm_bin: Path) -> None:
    from tests.charts._helm import CHART, by_kind, helm

    config = _skaffold()
    (release,) = _releases(config["deploy"])
    result = helm(helm_bin, "template", release["name"], str(CHART), "--namespace", release["namespace"])
    assert result.returncode == 0, result.stderr
    services = {
        s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
        for s in by_kind([d for d in yaml.safe_load_all(result.stdout) if d], "Service")
    }
    forwards = {(f["resourceName"], f["port"]) for f in config["portForward"]}
    assert {port for _, port in forwards} >= {8501, 8080}
    for forward in config["portForward"]:
        assert forward["resourceType"] == "service"
        assert forward["namespace"] == release["namespace"]
        assert forward["port"] in services.get(forward["resourceName"], set()), forward


def test_skaffold_kind_profile() -> None:
    profiles = {p["name"]: p for p in _skaffold().get("profiles", [])}
    assert "kind" in profiles
    kind = profiles["kind"]
    assert kind["build"]["local"]["push"] is False
    cluster = yaml.safe_load(KIND_CONFIG.read_text())
    assert kind["deploy"]["kubeContext"] == f"kind-{cluster['name']}"


def test_kind_config() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane"]
    for mapping in config["nodes"][0].get("extraPortMappings", []):
        assert 1 <= mapping["hostPort"] <= 65535
        assert 1 <= mapping["containerPort"] <= 65535


def test_readme_run_on_kind() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## Run on kind" in readme
    section = readme.split("## Run on kind", 1)[1]
    for command in (
        "kind create cluster --config manifests/kind-config.yaml",
        "skaffold dev -p kind",
        "kubectl apply -n tradebot -f manifests/examples/sma-basic.yaml",
        "http://127.0.0.1:8501",
        "http://127.0.0.1:8080",
    ):
        assert command in section, command
    assert (REPO_ROOT / "manifests" / "examples" / "sma-basic.yaml").is_file()
