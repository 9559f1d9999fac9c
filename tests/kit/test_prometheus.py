"""The local Prometheus of `tradebot up --prometheus`: its generated config passes `promtool check config`
(which also checks the rules file it loads), and a missing binary is an error that says what to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins._proc import REPO_ROOT, require_tool
from tradebot.kit.prometheus import (
    PrometheusNotFoundError,
    default_rules_file,
    find_prometheus,
    scrape_config,
)

RULES = REPO_ROOT / "manifests" / "monitoring" / "prometheus-rules.yaml"


def test_generated_config_is_valid_and_scrapes_one_job_per_service(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    assert default_rules_file() == RULES
    config = scrape_config(
        {"tradebot-feed": ["127.0.0.1:8001"], "tradebot-strategy": ["127.0.0.1:8002", "127.0.0.1:8003"]},
        interval_s=1.0,
        rule_files=[RULES],
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(config)
    result = subprocess.run(
        [str(promtool), "check", "config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    parsed = json.loads(config)
    assert parsed["global"]["evaluation_interval"] == "1000ms"
    assert {job["job_name"]: job["static_configs"][0]["targets"] for job in parsed["scrape_configs"]} == {
        "tradebot-feed": ["127.0.0.1:8001"],
        "tradebot-strategy": ["127.0.0.1:8002", "127.0.0.1:8003"],
    }


def test_a_missing_prometheus_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRADEBOT_PROMETHEUS_BIN", str(tmp_path / "nowhere"))
    monkeypatch.setenv("TRADEBOT_TOOLS_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrometheusNotFoundError, match="make tools"):
        find_prometheus()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replay", "data/historical_data.csv", "--source", "ws://127.0.0.1:1"], "exclude each other"),
        (["--scrape", "operator"], "use JOB=HOST:PORT"),
    ],
)
def test_up_refuses_contradictory_flags(flags: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tradebot.cli", "up", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
