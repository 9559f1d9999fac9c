"""Shared plumbing for the server fixtures: finding tools, free ports, supervised processes.

A missing tool fails the test under `CI=true` (the real component is part of the suite there)
and skips it elsewhere, always with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tradebot.kit.ports import free_port as free_port  # the one home; tests import it from here

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 120.0


def tools_dir() -> Path:
    return Path(os.environ.get("TRADEBOT_TOOLS_DIR", REPO_ROOT / ".tools"))


def find_tool(name: str) -> Path | None:
    """`.tools/bin/<name>` (or $TRADEBOT_TOOLS_DIR/bin) first, then PATH."""
    candidate = tools_dir() / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def missing_component(message: str) -> None:
    """Fails under CI=true, skips elsewhere; never returns."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(name: str) -> Path:
    """The tool's path; a missing tool fails the test under CI=true and skips it elsewhere."""
    path = find_tool(name)
    if path is None:
        missing_component(f"{name} is not installed: run `make tools` (it installs {name} into .tools/bin)")
        raise AssertionError("unreachable")  # pragma: no cover - pytest.fail/skip raise
    return path


def http_ok(url: str, *, token: str | None = None, ca_file: Path | None = None) -> bool:
    """True when `url` answers 200 (with a bearer token and CA file where given)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            status: int = response.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class ServerProcess:
    """A server in its own process group with its output in a log file; `stop` kills the group."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self.popen = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env,
                cwd=self._cwd,
            )

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Polls `ready` until it holds; fails with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before {what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {what} within {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL, the way a crash looks."""
        self.stop(signal.SIGKILL)

    def start(self) -> None:
        """Starts the stopped (or killed) process again with the same command, log and environment."""
        if self.running:
            raise RuntimeError(f"{self.name} is running")
        self.popen = self._spawn()

    def restart(self) -> None:
        self.stop()
        self.start()


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
