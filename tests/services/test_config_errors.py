"""Bad configuration stops a service at start-up with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("command", "env", "variable"),
    [
        (
            "strategy",
            {"TRADEBOT_STRATEGY_PARAMS": '{"shortWindow": 50, "longWindow": 10}'},
            "TRADEBOT_STRATEGY_PARAMS",
        ),
        # A timeframe outside the list is refused naming the variable, never traded on ticks.
        ("strategy", {"TRADEBOT_STRATEGY_PARAMS": '{"timeframe": "7m"}'}, "TRADEBOT_STRATEGY_PARAMS"),
        ("strategy", {"TRADEBOT_STRATEGY_BAR_LATENESS_S": "-1"}, "TRADEBOT_STRATEGY_BAR_LATENESS_S"),
        ("strategy", {"TRADEBOT_STRATEGY_HISTORY": "GOOG"}, "TRADEBOT_STRATEGY_HISTORY"),
        ("strategy", {"TRADEBOT_STRATEGY_ID": "Not A Valid Id"}, "TRADEBOT_STRATEGY_ID"),
        ("feed", {"TRADEBOT_FEED_URL": "http://example.com"}, "TRADEBOT_FEED_URL"),
        ("feed", {"TRADEBOT_FEED_SOURCE": "nasdaq"}, "TRADEBOT_FEED_SOURCE"),
        ("executor", {"TRADEBOT_EXECUTOR_PRICE_BAND_PCT": "-3"}, "TRADEBOT_EXECUTOR_PRICE_BAND_PCT"),
        ("api", {"TRADEBOT_HTTP_PORT": "99999"}, "TRADEBOT_HTTP_PORT"),
        ("simulator", {"TRADEBOT_SIMULATOR_VOLATILITY": "zero"}, "TRADEBOT_SIMULATOR_VOLATILITY"),
    ],
)
def test_bad_config_fails_fast_naming_the_variable(command: str, env: dict[str, str], variable: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tradebot.cli", command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
