"""A local Prometheus for `tradebot up --prometheus`: a generated scrape config and the server process.

The config scrapes every service's `/metrics` (one job per service: `tradebot-<service>`, as the chart's
ServiceMonitor names them) and loads the rules in `manifests/monitoring/prometheus-rules.yaml`, so the
alerts and recording rules a cluster would run are evaluated here too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tradebot.core.errors import TradebotError
from tradebot.kit.children import owned_child

# The repository's rules file, when running from a checkout (the chart carries its own copy).
_REPO_RULES = Path(__file__).resolve().parents[3] / "manifests" / "monitoring" / "prometheus-rules.yaml"


class PrometheusError(TradebotError):
    """The local Prometheus of `tradebot up --prometheus` could not start or did not get ready."""


class PrometheusNotFoundError(PrometheusError):
    """No `prometheus` binary: set TRADEBOT_PROMETHEUS_BIN, put it on PATH, or run `make tools`."""


def default_rules_file() -> Path | None:
    configured = os.environ.get("TRADEBOT_PROMETHEUS_RULES")
    if configured:
        return Path(configured)
    return _REPO_RULES if _REPO_RULES.is_file() else None


def find_prometheus() -> Path:
    configured = os.environ.get("TRADEBOT_PROMETHEUS_BIN")
    candidates = [Path(configured)] if configured else []
    tools = os.environ.get("TRADEBOT_TOOLS_DIR")
    if tools:
        candidates.append(Path(tools) / "bin" / "prometheus")
    found = shutil.which("prometheus")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PrometheusNotFoundError(PrometheusNotFoundError.__doc__)


def scrape_config(
    jobs: Mapping[str, Sequence[str]],
    *,
    interval_s: float = 5.0,
    rule_files: Sequence[Path] = (),
) -> str:
    """Prometheus configuration (JSON, which is YAML) scraping `jobs`: job name -> `host:port` targets."""
    interval = f"{max(int(interval_s * 1000), 100)}ms"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


@dataclass
class LocalPrometheus:
    """Debian's (or any) `prometheus` on `host:port` with a throwaway data directory."""

    jobs: Mapping[str, Sequence[str]]
    host: str = "127.0.0.1"
    port: int = 9090
    interval_s: float = 5.0
    rule_files: Sequence[Path] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    workdir: Path | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        binary = find_prometheus()
        self.workdir = Path(tempfile.mkdtemp(prefix="tradebot-prometheus-"))
        config = self.workdir / "prometheus.yml"
        config.write_text(scrape_config(self.jobs, interval_s=self.interval_s, rule_files=self.rule_files))
        log = (self.workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            **owned_child(),
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusError(f"prometheus not ready after {timeout_s:.0f}s: {self.log_tail()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        if self.workdir is None:
            return ""
        path = self.workdir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
