"""`tradebot up --replay FILE --until-done`: replays as fast as the pipeline takes it, exits 0 once every tick
is processed and every order answered, and prints one JSON summary (fills and trades per strategy) whose
trades are the backtest's on the same file, in one process over memory and as processes over Kafka and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_bar_parity import SETS, expected_live, tick_file
from tests.plugins.servers import KafkaBroker, RedisServer
from tradebot.kit.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["embedded", "processes"])
def test_until_done_exits_0_with_the_fills_and_trades_of_each_strategy(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = tmp_path / "ticks.csv"
    tick_file(path, n=3000)
    trips, n_fills = expected_live(path, "a", "1m")
    assert len(trips) >= 2
    argv = [
        sys.executable, "-m", "tradebot.cli", "up", "--replay", str(path), "--symbol", "GOOG", "--until-done",
        "--strategy", f"bars={json.dumps({**SETS['a'], 'timeframe': '1m'})}",
        "--strategy", 'ticks={"short-window":5,"long-window":20,"stop-loss-pct":0.3,"sizing":"qty:10"}',
        "--api-port", str(free_port()), "--simulator-port", str(free_port()),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_") or k == "TRADEBOT_TOOLS_DIR"}
    if mode == "embedded":
        argv.append("--embedded")
    else:
        kafka: KafkaBroker = request.getfixturevalue("own_kafka")  # fresh topics: this run's alone
        redis: RedisServer = request.getfixturevalue("own_redis")
        argv += ["--kafka", kafka.bootstrap, "--redis", redis.url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # stdout is the summary alone
    assert summary["ticks"] == 3000
    bars = summary["strategies"]["bars"]
    assert bars["fills"] == n_fills, (summary, done.stderr[-4000:])
    assert [(t["side"], t["qty"], t["entry_price"], t["exit_price"]) for t in bars["trades"]] == trips
    ticks = summary["strategies"]["ticks"]
    assert ticks["fills"] > 4
    assert {t["exit_reason"] for t in ticks["trades"]} <= {"exit_cross", "stop_loss"}
