"""A sweep's table is exactly what single kernel runs of each combination give, metric for metric."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradebot.backtest.engine import BacktestConfig
from tradebot.backtest.kernel import Arrays, moving_averages, run_kernel, simulate
from tradebot.backtest.metrics import infer_bars_per_year
from tradebot.backtest.sweep import expand_grid, run_sweep, summary_stats
from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams

COSTS = Costs(commission_pct=0.1, commission_fixed=0.5, slippage_bps=2)
GRID: dict[str, list[Any]] = {
    "short_window": [2, 5, 9],
    "long_window": [6, 14, 30],
    "stop_loss_pct": [None, 1.0, 3.0],
    "trailing_stop_pct": [None, 2.0],
    "allow_short": [False, True],
}


def bars_with_gaps(n: int, seed: int) -> pd.DataFrame:
    """A random walk whose opens gap away from the previous close, with a missing stretch of time
    (a weekend-like hole) so that days and the daily-loss limit roll over a gap."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.008, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.004, n))
    wick = np.abs(rng.normal(0, 0.003, n))
    hours = pd.date_range("2022-01-03", periods=n + 60, freq="1h", tz="UTC")
    index = pd.DatetimeIndex(hours[:400].append(hours[460:]))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick),
            "low": np.minimum(open_, close) / (1 + wick),
            "close": close,
            "volume": 1.0,
        },
        index=index,
    )


def key(values: Iterable[Any]) -> tuple[Any, ...]:
    """Grid values as a dictionary key: the table holds a parameter left out (None) as NaN."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize(
    ("fill", "timeframe", "risk"),
    [
        ("close", "tick", {}),
        ("close", "1h", {"cooldown_bars": 3}),
        ("next-open", "tick", {"max_daily_loss_pct": 1.5}),
    ],
)
def test_every_metric_of_every_combination_equals_a_single_run(
    fill: str, timeframe: str, risk: dict[str, Any]
) -> None:
    bars = bars_with_gaps(3_000, seed=11)
    arrays = Arrays.from_frame(bars)
    base = BacktestConfig(
        params=StrategyParams(timeframe=timeframe, take_profit_pct=5, risk=risk),
        costs=COSTS,
        fill=fill,  # type: ignore[arg-type]
    )
    result = run_sweep(bars, base, GRID, metric="sharpe", jobs=2)
    combos, invalid = expand_grid(base.params, GRID)
    assert (len(result.table), invalid) == (8 * 3 * 2 * 2, 1 * 3 * 2 * 2)  # short 9, long 6 is invalid
    n = len(bars)
    years = (bars.index[-1] - bars.index[0]).total_seconds() / 86_400.0 / 365.25
    per_year = float(infer_bars_per_year(arrays.index))
    rows = {key(row[name] for name in GRID): row for _, row in result.table.iterrows()}
    traded: set[str] = set()
    for params in combos:
        config = replace(base, params=params)
        # What `run_kernel` runs, with its trades and equity curve recorded.
        single = simulate(arrays, *moving_averages(arrays, config), config, record=True)
        expected = summary_stats(single.summary, n, base.initial_cash, per_year, years)
        row = rows[key(getattr(params, name) for name in GRID)]
        for metric, value in expected.items():
            assert same(float(row[metric]), value), (params, metric, row[metric], value)
        raw = run_kernel(arrays, config)
        assert row["n_trades"] == len(raw.trades)
        assert row["equity_final"] == raw.equity[-1]
        traded |= set(raw.trades.exit_reason)
    # The grid exercises every way out of a position.
    assert traded >= {"exit_cross", "stop_loss", "trailing_stop", "take_profit", "end_of_data"}


def test_short_not_below_long_is_skipped_and_counted_as_before() -> None:
    bars = bars_with_gaps(800, seed=3)
    base = BacktestConfig(params=StrategyParams(stop_loss_pct=2), costs=COSTS)
    result = run_sweep(bars, base, {"short_window": [5, 10, 20], "long_window": [10, 20]})
    assert result.invalid == 3  # 10/10, 20/10, 20/20
    assert sorted(zip(result.table.short_window, result.table.long_window, strict=True)) == [
        (5, 10),
        (5, 20),
        (10, 20),
    ]
    none_valid = run_sweep(bars, base, {"short_window": [30], "long_window": [10, 30]})
    assert none_valid.invalid == 2
    assert none_valid.table.empty
