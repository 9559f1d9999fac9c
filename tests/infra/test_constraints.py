"""The pinned versions (.ci/constraints.txt) cover every dependency and stay within pyproject.toml's ranges."""

from __future__ import annotations

import tomllib
from importlib.metadata import distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for number, line in enumerate((REPO_ROOT / ".ci/constraints.txt").read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, version = line.partition("==")
        assert version, f".ci/constraints.txt line {number}: {line!r} is not name==version"
        assert canonicalize_name(name) not in found, f".ci/constraints.txt line {number}: {name} pinned twice"
        found[canonicalize_name(name)] = version
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts.extend(extra)
    return [Requirement(text) for text in texts]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    problems = []
    for requirement in declared():
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not pinned")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert not problems, "; ".join(problems) + " (run `make lock`)"


def test_the_venv_holds_the_pinned_versions() -> None:
    """`make test` installs with the constraints: what runs is what is pinned."""
    pinned = pins()
    installed: dict[str, str] = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    differ = {
        name: (version, installed[name])
        for name, version in pinned.items()
        if name in installed and installed[name] != version
    }
    assert not differ, f"pinned vs installed: {differ}"
