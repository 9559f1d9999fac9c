"""`make demo` shows progress while it installs the venv (issue 16.13); `make test` and `make venv` stay quiet."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def planned(target: str) -> list[str]:
    """The commands `make <target>` runs when pyproject.toml has changed (a first run, or a new dependency)."""
    # Run as a make of its own, also when the suite itself runs under `make test` (a sub-make would print
    # "make[1]: Entering directory" lines around the commands).
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    }
    done = subprocess.run(
        ["make", "--no-print-directory", "--dry-run", "--always-make", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def dependency_install(commands: list[str]) -> str:
    [line] = [c for c in commands if "pip install" in c and "-e '.[dev]'" in c]
    return line


def test_make_demo_announces_each_step_and_lets_pip_show_its_progress() -> None:
    commands = planned("demo")
    install = dependency_install(commands)
    assert "--quiet" not in install
    assert "--progress-bar on" in install
    announced = [c for c in commands if c.startswith('echo "==>')]
    assert len(announced) == 3  # installing, ready, starting
    assert commands.index(announced[0]) < commands.index(install) < commands.index(announced[1])
    assert commands[-1].endswith("tradebot up --embedded")


@pytest.mark.parametrize("target", ["venv", "test"])
def test_other_targets_keep_pip_quiet(target: str) -> None:
    assert "--quiet" in dependency_install(planned(target))
