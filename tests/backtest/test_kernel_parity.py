"""The numba kernel gives exactly the reference engine's trades and equity, on any data and parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tradebot.backtest.engine import BacktestConfig, run_reference
from tradebot.backtest.kernel import run_kernel
from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams


def frame(returns: np.ndarray, gaps: np.ndarray, wicks: np.ndarray, freq: str) -> pd.DataFrame:
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(gaps)
    high = np.maximum(open_, close) * (1.0 + wicks)
    low = np.minimum(open_, close) / (1.0 + wicks[::-1])
    index = pd.date_range("2021-03-01", periods=len(close), freq=freq, tz="UTC")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": 1.0}, index=index)


@st.composite
def datasets(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(2, 400))
    vol = draw(st.sampled_from([0.002, 0.01, 0.03]))
    floats = st.floats(-5, 5, allow_nan=False)
    returns = draw(arrays(np.float64, n, elements=floats)) * vol
    gaps = draw(arrays(np.float64, n, elements=floats)) * vol / 3
    wicks = np.abs(draw(arrays(np.float64, n, elements=floats))) * vol / 2
    freq = draw(st.sampled_from(["1min", "1h", "1D"]))
    bars = frame(returns, gaps, wicks, freq)
    tick = draw(st.sampled_from([None, 0.01, 0.5]))
    if tick is not None:
        # Prices on a tick grid make ties (equal MAs, a low exactly at a stop) common.
        bars = (bars / tick).round().clip(lower=1.0) * tick
    return bars


optional_pct = st.none() | st.floats(0.2, 15)
parameters = st.fixed_dictionaries(
    {
        "ma_type": st.sampled_from(["sma", "ema"]),
        "short_window": st.integers(1, 8),
        "long_window": st.integers(9, 30),
        "stop_loss_pct": optional_pct,
        "take_profit_pct": optional_pct,
        "trailing_stop_pct": optional_pct,
        "allow_short": st.booleans(),
        # The engines read the timeframe (bars: stops see each bar's range) on data already at it.
        "timeframe": st.sampled_from(["tick", "1h"]),
        "exit_rule": st.sampled_from(["stop-first", "target-first", "open-nearest"]),
        "qty_step": st.sampled_from([0.0, 0.001, 1.0]),
        "sizing": st.sampled_from(["all-in", "qty:3", "notional:2500", "equity-pct:40", "risk-pct:1"]),
        "risk": st.fixed_dictionaries(
            {
                "cooldown_bars": st.integers(0, 5),
                "max_daily_loss_pct": st.none() | st.floats(0.5, 5),
                "max_gross_exposure": st.sampled_from([0.5, 1.0, 2.0]),
                "max_position_qty": st.none() | st.floats(1, 200),
                "max_position_notional": st.none() | st.floats(500, 20_000),
            }
        ),
    }
)
costs = st.builds(
    Costs,
    commission_pct=st.sampled_from([0.0, 0.05, 0.2]),
    commission_fixed=st.sampled_from([0.0, 1.0]),
    slippage_bps=st.sampled_from([0.0, 3.0]),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(bars=datasets(), params=parameters, cost=costs, fill=st.sampled_from(["close", "next-open"]))
def test_kernel_matches_reference(
    bars: pd.DataFrame, params: dict[str, object], cost: Costs, fill: str
) -> None:
    if params["sizing"] == "risk-pct:1" and params["stop_loss_pct"] is None:
        params = {**params, "stop_loss_pct": 2.0}
    config = BacktestConfig(params=StrategyParams.model_validate(params), costs=cost, fill=fill)  # type: ignore[arg-type]
    reference = run_reference(bars, config)
    fast = run_kernel(bars, config)
    pd.testing.assert_frame_equal(fast.trades, reference.trades, check_exact=True)
    np.testing.assert_array_equal(fast.equity, reference.equity)
    np.testing.assert_array_equal(fast.short_ma, reference.short_ma)
    np.testing.assert_array_equal(fast.long_ma, reference.long_ma)


# Parameters under which every exit rule and risk limit comes into play on `random_walk` bars.
EVERY_RULE: dict[str, Any] = {
    "short_window": 5,
    "long_window": 20,
    "stop_loss_pct": 1.5,
    "take_profit_pct": 4,
    "trailing_stop_pct": 2,
    "allow_short": True,
    "risk": {"cooldown_bars": 2, "max_daily_loss_pct": 2},
}


def random_walk(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return frame(rng.normal(0, 0.01, n), rng.normal(0, 0.004, n), np.abs(rng.normal(0, 0.004, n)), "1h")


def test_parity_on_a_long_synthetic_series_with_every_rule() -> None:
    """One big case the random search may not reach: thousands of trades of every exit kind."""
    bars = random_walk(20_000, seed=7)
    runs = [("close", "tick", "stop-first")]
    runs += [(fill, "1h", rule) for fill in ("close", "next-open") for rule in ("stop-first", "open-nearest")]
    runs += [("next-open", "tick", "target-first")]
    for fill, timeframe, exit_rule in runs:
        config = BacktestConfig(
            params=StrategyParams.model_validate(
                {**EVERY_RULE, "timeframe": timeframe, "exit_rule": exit_rule}
            ),
            costs=Costs(commission_pct=0.05, slippage_bps=2),
            fill=fill,  # type: ignore[arg-type]
        )
        reference = run_reference(bars, config)
        fast = run_kernel(bars, config)
        assert set(reference.trades.exit_reason) >= {
            "exit_cross",
            "stop_loss",
            "take_profit",
            "trailing_stop",
        }
        pd.testing.assert_frame_equal(fast.trades, reference.trades, check_exact=True)
        np.testing.assert_array_equal(fast.equity, reference.equity)
