"""Issue 16.2: the live equity, marked to market at every price (open positions included), equals the
backtest's equity curve on the same data: a CSV replayed through simulator, feed, strategy and executor
(separate processes, real Kafka and Redis), read back from the API's GET /equity/marked and /summary."""

from __future__ import annotations

import pytest

from tests.e2e.harness import PARAMS, SAMPLE, Pipeline, backtest_trades
from tests.e2e.test_halt import call
from tests.plugins.servers import KafkaBroker
from tradebot.backtest.data import load_ohlcv
from tradebot.backtest.engine import BacktestConfig
from tradebot.backtest.result import run_backtest
from tradebot.core.params import StrategyParams


def test_the_marked_live_equity_is_the_backtests_equity_curve(pipeline: Pipeline[KafkaBroker]) -> None:
    bars = load_ohlcv(SAMPLE)
    backtest = run_backtest(bars, BacktestConfig(StrategyParams.model_validate(PARAMS), fill="close"))
    expected_trades, result = backtest_trades()  # the CLI's own numbers: `tradebot backtest --json`
    open_at_end = any(t["exit_reason"] == "end_of_data" for t in result["trades"])
    fills = 2 * len(expected_trades) + int(open_at_end)

    pipeline.start_replay(with_api=True)
    pipeline.wait_http("api")

    def replayed() -> bool:
        status, body = call(pipeline, "GET", "/equity/marked?strategy=parity")
        if status != 200 or len(body["points"]) < len(bars):
            return False
        return len(call(pipeline, "GET", "/fills?limit=1000")[1]["items"]) >= fills

    pipeline.wait_until("every price and fill in the store", replayed, 180)
    points = call(pipeline, "GET", "/equity/marked?strategy=parity")[1]["points"]
    assert [p["ts"][:10] for p in points] == [ts.strftime("%Y-%m-%d") for ts in bars.index]
    live = [p["equity"] for p in points]
    expected = list(backtest.raw.equity)
    # The backtest closes a position still open on the last bar at its close (no costs here): the same
    # value as marking it there, which is what the live curve does.
    assert live == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert max(p["drawdown_pct"] for p in points) == pytest.approx(
        -result["stats"]["max_drawdown_pct"], rel=1e-9
    )

    summary = next(s for s in call(pipeline, "GET", "/summary")[1]["items"] if s["strategy_id"] == "parity")
    assert summary["equity"] == pytest.approx(result["stats"]["equity_final"], rel=1e-9)
    assert summary["max_drawdown_pct"] == pytest.approx(-result["stats"]["max_drawdown_pct"], rel=1e-9)
    assert summary["trades"] == len(expected_trades)
    # The backtest's statistics count the trade it closed at the end of the data; live it is still open.
    closed = [t["pnl"] for t in result["trades"] if t["exit_reason"] != "end_of_data"]
    wins, losses = [p for p in closed if p > 0], [-p for p in closed if p < 0]
    assert summary["win_rate_pct"] == pytest.approx(len(wins) / len(closed) * 100.0, rel=1e-9)
    assert summary["profit_factor"] == pytest.approx(sum(wins) / sum(losses), rel=1e-9)
    assert summary["unrealized_pnl"] != 0.0 if open_at_end else summary["unrealized_pnl"] == 0.0
