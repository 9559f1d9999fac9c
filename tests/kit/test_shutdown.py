"""SIGTERM/SIGINT on a real service process: readiness 503 at once, in-flight work completes, exit 0.

Order is asserted through the process's JSON log lines; waits have generous limits that only stop a
hung test, never a speed assertion.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kit.support import REPO_ROOT, free_port, wait_until
from tradebot.kit.lifecycle import YOUNG_GENERATION_THRESHOLD


@dataclass
class SampleProcess:
    process: subprocess.Popen[bytes]
    port: int
    gate_dir: Path
    log_path: Path

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()]

    def logged(self, message: str, **fields: Any) -> bool:
        return any(
            entry["message"] == message and all(entry.get(key) == value for key, value in fields.items())
            for entry in self.logs()
        )

    def position(self, message: str, **fields: Any) -> int:
        for index, entry in enumerate(self.logs()):
            if entry["message"] == message and all(entry.get(k) == v for k, v in fields.items()):
                return index
        raise AssertionError(f"no log line {message!r} {fields}")

    def readyz(self) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5)
        except httpx.TransportError:
            return None

    def release(self, unit: int) -> None:
        (self.gate_dir / f"unit-{unit}").touch()

    def wait_exit(self) -> int:
        return self.process.wait(timeout=120)


@pytest.fixture
def start_sample(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int | None = None, **env: str) -> SampleProcess:
        port = port or free_port()
        gate_dir = tmp_path / "gates"
        gate_dir.mkdir(exist_ok=True)
        log_path = tmp_path / f"service-{len(started)}.log"
        environment = {
            **os.environ,
            "TRADEBOT_HTTP_HOST": "127.0.0.1",
            "TRADEBOT_HTTP_PORT": str(port),
            "TRADEBOT_SAMPLE_GATE_DIR": str(gate_dir),
            **env,
        }
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.kit.sample_service"],
                cwd=REPO_ROOT,
                env=environment,
                stdout=log_file,
                stderr=subprocess.PIPE,
            )
        started.append(process)
        return SampleProcess(process, port, gate_dir, log_path)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _running_unit_one(sample: SampleProcess) -> None:
    def ready() -> bool:
        assert sample.process.poll() is None, f"service exited early: {sample.log_path.read_text()}"
        response = sample.readyz()
        return response is not None and response.status_code == 200

    wait_until(ready, "the sample service to be ready")
    wait_until(lambda: sample.logged("unit started", unit=1), "unit 1 to start")


def test_a_service_runs_with_its_start_up_frozen_and_a_rarer_young_collection(start_sample: Any) -> None:
    sample: SampleProcess = start_sample()
    _running_unit_one(sample)
    (entry,) = [e for e in sample.logs() if e.get("message") == "collector"]
    assert entry["threshold"][0] == YOUNG_GENERATION_THRESHOLD
    assert entry["threshold"][1:] == list(gc.get_threshold()[1:])  # the older generations as Python has them
    # Start-up's objects (every module, the app, the settings) are out of the collector's reach.
    assert entry["frozen"] > 10_000
    sample.process.send_signal(signal.SIGTERM)
    sample.release(1)
    assert sample.wait_exit() == 0


def _became_unready(sample: SampleProcess) -> None:
    def unready() -> bool:
        response = sample.readyz()
        return response is not None and response.status_code == 503

    wait_until(unready, "/readyz to answer 503")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_flips_readiness_then_finishes_the_unit_and_exits_zero(
    start_sample: Any, sig: signal.Signals
) -> None:
    sample: SampleProcess = start_sample()
    _running_unit_one(sample)

    sample.process.send_signal(sig)
    _became_unready(sample)
    response = sample.readyz()
    assert response is not None
    assert response.json()["status"] == "shutting_down"
    # Unit 1 cannot have finished: its gate is still closed. The process is draining, not gone.
    assert sample.process.poll() is None
    assert not sample.logged("unit finished", unit=1)

    sample.release(1)
    assert sample.wait_exit() == 0

    order = [
        sample.position("unit started", unit=1),
        sample.position("shutdown requested", signal=sig.name),
        sample.position("unit finished", unit=1),
        sample.position("main closing", units=1),
        sample.position("main finished"),
        sample.position("service stopped", exit_code=0, reason=f"signal {sig.name}"),
    ]
    assert order == sorted(order)
    assert not sample.logged("unit started", unit=2)
    assert all(entry["service"] == "kit-sample" for entry in sample.logs())


def test_a_second_signal_exits_at_once(start_sample: Any) -> None:
    sample: SampleProcess = start_sample()
    _running_unit_one(sample)
    sample.process.send_signal(signal.SIGTERM)
    _became_unready(sample)
    sample.process.send_signal(signal.SIGTERM)
    assert sample.wait_exit() == 128 + signal.SIGTERM
    assert sample.logged("second signal: exiting at once", signal="SIGTERM")
    assert not sample.logged("unit finished", unit=1)


def test_main_overrunning_the_grace_period_is_cancelled_and_exits_one(start_sample: Any) -> None:
    sample: SampleProcess = start_sample(TRADEBOT_SHUTDOWN_GRACE_SECONDS="0.5")
    _running_unit_one(sample)
    sample.process.send_signal(signal.SIGTERM)
    assert sample.wait_exit() == 1  # the gate never opens
    order = [
        sample.position("shutdown requested"),
        sample.position("shutdown grace period exceeded: cancelling main"),
        sample.position("unit cancelled", unit=1),
        sample.position("service stopped", exit_code=1),
    ]
    assert order == sorted(order)
    assert not sample.logged("unit finished", unit=1)


def test_invalid_configuration_is_one_line_on_stderr_and_exit_two(start_sample: Any) -> None:
    sample: SampleProcess = start_sample(TRADEBOT_HTTP_PORT="70000")
    assert sample.wait_exit() == 2
    assert sample.process.stderr is not None
    assert sample.process.stderr.read().decode() == (
        "configuration error: TRADEBOT_HTTP_PORT: Input should be less than or equal to 65535 (got '70000')\n"
    )
    assert sample.log_path.read_text() == ""


def test_a_busy_port_fails_start_up_with_exit_one(start_sample: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        sample: SampleProcess = start_sample(port=squatter.getsockname()[1])
        assert sample.wait_exit() == 1
    assert sample.logged("http server failed to start")
    assert not sample.logged("unit started", unit=1)
