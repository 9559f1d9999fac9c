"""A real live pipeline for the dashboard tests: `tradebot up --embedded` replaying the GOOG CSV.

One session fixture starts it on free ports with the token `test-token`, waits until the replay has
produced orders and fills (and the order log has stopped growing), yields the API URL and stops it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.plugins._proc import REPO_ROOT, ServerProcess, free_port

API_TOKEN = "test-token"
REPLAY_CSV = REPO_ROOT / "data" / "historical_data.csv"
APP_PATH = REPO_ROOT / "services" / "tradebot" / "dashboard" / "app.py"


def _count(url: str, path: str) -> int:
    try:
        response = httpx.get(f"{url}{path}", params={"limit": 1000}, timeout=2.0)
    except httpx.HTTPError:
        return -1
    if response.status_code != 200:
        return -1
    return len(response.json()["items"])


@contextmanager
def replay_pipeline(workdir: Path, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """`tradebot up --embedded` replaying the GOOG series (with `extra_args`, e.g. its strategies) until the
    replay has settled; yields the API URL and stops it."""
    api_port, simulator_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    argv = [
        sys.executable, "-m", "tradebot.cli", "up", "--embedded", "--no-dashboard",
        "--replay", str(REPLAY_CSV), "--symbol", "GOOG", "--speed", "max",
        "--api-port", str(api_port), "--simulator-port", str(simulator_port), "--api-token", API_TOKEN,
        *extra_args,
    ]  # fmt: skip
    env = {**_base_env(), "TRADEBOT_LOG_JSON": "false"}
    process = ServerProcess("tradebot-up", argv, workdir, env=env, cwd=REPO_ROOT)
    try:
        process.wait_until("orders", lambda: _count(url, "/orders") > 0, timeout=60)
        process.wait_until("fills", lambda: _count(url, "/fills") > 0, timeout=60)
        _wait_until_settled(process, url)
        yield url
    finally:
        process.stop(timeout=20.0)


@pytest.fixture(scope="session")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with replay_pipeline(tmp_path_factory.mktemp("tradebot-up")) as url:
        yield url


def _wait_until_settled(
    process: ServerProcess, url: str, quiet_s: float = 1.5, timeout: float = 60.0
) -> None:
    """The replay runs at max speed for a few seconds: wait until the order log stops growing."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = _count(url, "/fills")
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        if not process.running:
            raise RuntimeError(f"tradebot up exited with {process.popen.returncode}:\n{process.log_tail()}")
        time.sleep(0.2)


def _base_env() -> dict[str, str]:
    # The dashboard reads TRADEBOT_*: leave none of the caller's in the way of what a test sets.
    return {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_") or k == "TRADEBOT_TOOLS_DIR"}


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean TRADEBOT_* environment for AppTest (the app reads its settings from it on every run)."""
    for key in list(os.environ):
        if key.startswith("TRADEBOT_") and key != "TRADEBOT_TOOLS_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRADEBOT_DATA_DIR", str(REPO_ROOT / "data"))
    monkeypatch.setenv("TRADEBOT_REFRESH_SECONDS", "2")
    return monkeypatch
