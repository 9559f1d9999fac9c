"""Static checks of services/Dockerfile and services/Dockerfile.dashboard (no Docker engine here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.images._dockerfile import Stage, instructions, stages
from tests.plugins._proc import REPO_ROOT

SERVICES = REPO_ROOT / "services"
DOCKERFILE = SERVICES / "Dockerfile"
DASHBOARD_DOCKERFILE = SERVICES / "Dockerfile.dashboard"
DOCKERFILES = [
    pytest.param(DOCKERFILE, id="Dockerfile"),
    pytest.param(DASHBOARD_DOCKERFILE, id="Dockerfile.dashboard"),
]
CHART = REPO_ROOT / "charts" / "tradebot"
UID = 10001


def _final(path: Path) -> Stage:
    return stages(path)[-1]


def _run_text(path: Path) -> str:
    return "\n".join(i.args for s in stages(path) for i in s.all("RUN"))


@pytest.mark.parametrize("path", DOCKERFILES)
def test_every_from_is_pinned(path: Path) -> None:
    names = {s.name for s in stages(path) if s.name}
    for stage in stages(path):
        if stage.base in names:
            continue  # FROM an earlier stage
        assert "$" not in stage.base, f"unresolved build arg in FROM {stage.base}"
        image, _, digest = stage.base.partition("@")
        repository, _, tag = image.rpartition(":")
        assert repository, f"untagged FROM {stage.base}"
        assert tag, f"untagged FROM {stage.base}"
        assert "/" not in tag, f"untagged FROM {stage.base}"
        assert tag != "latest", f"FROM {stage.base} uses latest"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-bookworm", tag), (
            f"not pinned to a full version: {stage.base}"
        )
        if digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), stage.base
    runtime = _final(path)
    assert runtime.base.startswith("python:3.11."), runtime.base
    assert "sha256:<digest>" in path.read_text() or "@sha256:" in runtime.base  # digest pin documented


@pytest.mark.parametrize("path", DOCKERFILES)
def test_multi_stage_with_non_root_numeric_user(path: Path) -> None:
    all_stages = stages(path)
    assert len(all_stages) >= 2, "not a multi-stage build"
    runtime = all_stages[-1]
    assert any(i.args.startswith(f"--from={all_stages[0].name}") for i in runtime.all("COPY")), (
        "runtime copies nothing from the builder"
    )
    users = runtime.all("USER")
    assert users, "the final stage sets no USER"
    user = users[-1].args.split(":")[0]
    assert user.isdigit(), f"USER {users[-1].args} is not numeric"
    assert int(user) == UID, f"USER {users[-1].args} is not uid {UID}"
    assert "pip" not in " ".join(i.args for i in runtime.all("RUN")), "the runtime stage installs packages"
    entrypoint = runtime.all("ENTRYPOINT")
    assert entrypoint
    assert yaml.safe_load(entrypoint[-1].args) == ["tradebot"]


def _liveness(component: str, helm_bin: Path) -> tuple[int, str]:
    """(port, path) of the chart's livenessProbe for a component, ports resolved to numbers."""
    from tests.charts._helm import find, pod_spec, render

    container = pod_spec(find(render(helm_bin), "Deployment", component))["containers"][0]
    http = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = http["port"] if isinstance(http["port"], int) else ports[http["port"]]
    return int(port), str(http["path"])


@pytest.mark.parametrize(
    ("path", "components"),
    [
        pytest.param(DOCKERFILE, ("simulator", "feed", "executor", "api", "operator"), id="Dockerfile"),
        pytest.param(DASHBOARD_DOCKERFILE, ("dashboard",), id="Dockerfile.dashboard"),
    ],
)
def test_healthcheck_matches_the_chart_liveness_probe(
    path: Path, components: tuple[str, ...], helm_bin: Path
) -> None:
    checks = _final(path).all("HEALTHCHECK")
    assert len(checks) == 1, "exactly one HEALTHCHECK in the final stage"
    check = checks[0].args
    assert "CMD" in check
    assert "urllib" in check
    assert "python" in check
    for component in components:
        port, probe_path = _liveness(component, helm_bin)
        assert f"'127.0.0.1:{port}{probe_path}'" in check, (component, port, probe_path)


def test_non_ui_image_has_no_streamlit() -> None:
    runs = [i.args for s in stages(DOCKERFILE) for i in s.all("RUN")]
    installs = [cmd for run in runs for cmd in run.split("&&") if "pip install" in cmd]
    assert installs
    for command in installs:
        assert "streamlit" not in command.lower(), command
        if ".whl" in command or re.search(r"pip install\s+(-e\s+)?\.(\[|\s|$)", command):
            assert "--no-deps" in command, f"the wheel must be installed without its dependencies: {command}"
    assert re.search(r"!\s*\S*python -c \"import streamlit\"", _run_text(DOCKERFILE)), (
        "no check that streamlit is absent"
    )


def test_non_ui_requirements_are_pyproject_minus_streamlit() -> None:
    """Runs the Dockerfile's own requirements generator against pyproject.toml."""
    match = re.search(r'python -c "(import tomllib.*?)" > (\S+)', _run_text(DOCKERFILE))
    assert match, "the requirements list is not generated from pyproject.toml"
    result = subprocess.run(
        [sys.executable, "-c", match.group(1)], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    requirements = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert not [r for r in requirements if r.lower().startswith("streamlit")]
    for needed in ("fastapi", "confluent-kafka", "redis", "kopf", "prometheus-client", "websockets"):
        assert any(r.startswith(needed) for r in requirements), needed


def test_dashboard_image_installs_streamlit_and_exposes_ports() -> None:
    runtime = _final(DASHBOARD_DOCKERFILE)
    exposed = {p.split("/")[0] for i in runtime.all("EXPOSE") for p in i.args.split()}
    assert {"8501", "9090"} <= exposed  # the UI; /livez, /readyz, /metrics
    assert 'python -c "import streamlit"' in _run_text(DASHBOARD_DOCKERFILE)
    # Its dependencies are pyproject.toml's, streamlit included, at the pinned versions.
    match = re.search(r'python -c "(import tomllib.*?)" > (\S+)', _run_text(DASHBOARD_DOCKERFILE))
    assert match, "the dashboard's requirements are not generated from pyproject.toml"
    result = subprocess.run(
        [sys.executable, "-c", match.group(1)], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert any(line.lower().startswith("streamlit") for line in result.stdout.splitlines())
    assert f"pip install -c constraints.txt -r {match.group(2)}" in _run_text(DASHBOARD_DOCKERFILE)
    cmd = runtime.all("CMD")
    assert cmd
    assert yaml.safe_load(cmd[-1].args) == ["dashboard", "--host", "0.0.0.0"]


@pytest.mark.parametrize("path", DOCKERFILES)
def test_copied_sources_exist_and_are_not_docker_ignored(path: Path) -> None:
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, "the root .dockerignore should allow-list the build context"
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for instruction in instructions(path):
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        *sources, _destination = instruction.args.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path"
            assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                f"COPY {source} is excluded by .dockerignore"
            )
