"""Backtest statistics on hand-constructed equity curves and trade lists."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.backtest.metrics import compute_stats, drawdown_series, infer_bars_per_year

EXPECTED_KEYS = {
    "start",
    "end",
    "duration_days",
    "bars",
    "bars_per_year",
    "equity_final",
    "equity_peak",
    "total_return_pct",
    "cagr_pct",
    "volatility_ann_pct",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown_pct",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_days",
    "n_trades",
    "win_rate_pct",
    "profit_factor",
    "avg_win",
    "avg_loss",
    "avg_trade_pct",
    "best_trade_pct",
    "worst_trade_pct",
    "expectancy",
    "exposure_pct",
    "buy_hold_return_pct",
    "commissions",
}

TRADE_COLUMNS = [
    "entry_time",
    "exit_time",
    "entry_bar",
    "exit_bar",
    "side",
    "qty",
    "entry_price",
    "exit_price",
    "pnl",
    "return_pct",
    "exit_reason",
    "commission",
]


def days(n: int, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="D", tz="UTC")


def no_trades() -> pd.DataFrame:
    return pd.DataFrame({col: [] for col in TRADE_COLUMNS})


def make_trades(
    index: pd.DatetimeIndex, rows: list[tuple[int, int, str, float, float, float]]
) -> pd.DataFrame:
    """rows: (entry_bar, exit_bar, side, entry_price, exit_price, commission); qty 1."""
    records: list[dict[str, Any]] = []
    for entry, exit_, side, p_in, p_out, fee in rows:
        sign = 1.0 if side == "long" else -1.0
        pnl = sign * (p_out - p_in) - fee
        records.append(
            {
                "entry_time": index[entry],
                "exit_time": index[exit_],
                "entry_bar": entry,
                "exit_bar": exit_,
                "side": side,
                "qty": 1.0,
                "entry_price": p_in,
                "exit_price": p_out,
                "pnl": pnl,
                "return_pct": pnl / p_in * 100.0,
                "exit_reason": "stop_loss" if pnl < 0 else "exit_cross",
                "commission": fee,
            }
        )
    return pd.DataFrame(records, columns=TRADE_COLUMNS)


def test_drawdown_of_simple_curve() -> None:
    dd = drawdown_series(np.array([100.0, 120.0, 90.0, 130.0]))
    np.testing.assert_allclose(dd, [0.0, 0.0, -0.25, 0.0])
    assert (dd <= 0).all()


def test_known_curve_statistics() -> None:
    equity = np.array([100.0, 120.0, 90.0, 130.0])
    index = days(4, start="2024-01-06")  # Saturday: calendar-daily data
    close = np.array([10.0, 11.0, 9.0, 12.0])
    stats = compute_stats(equity, index, no_trades(), close, 100.0)
    assert set(stats) == EXPECTED_KEYS
    assert stats["max_drawdown_pct"] == pytest.approx(-25.0)
    assert stats["total_return_pct"] == pytest.approx(30.0)
    assert stats["equity_final"] == 130.0
    assert stats["equity_peak"] == 130.0
    assert stats["buy_hold_return_pct"] == pytest.approx((12.0 / 10.0 - 1) * 100)
    assert stats["bars"] == 4
    assert stats["duration_days"] == pytest.approx(3.0)
    assert stats["start"] == "2024-01-06T00:00:00+00:00"
    assert stats["end"] == "2024-01-09T00:00:00+00:00"
    # Peak on bar 1, recovered on bar 3.
    assert stats["max_drawdown_duration_bars"] == 2
    assert stats["max_drawdown_duration_days"] == pytest.approx(2.0)
    # Calendar daily data including weekends -> 365 bars/year.
    assert stats["bars_per_year"] == 365.0
    returns = np.array([0.0, 0.2, -0.25, 130 / 90 - 1])
    expected_sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(365)
    assert stats["sharpe"] == pytest.approx(expected_sharpe)
    downside = math.sqrt(np.mean(np.minimum(returns, 0) ** 2))
    assert stats["sortino"] == pytest.approx(returns.mean() / downside * math.sqrt(365))
    assert stats["volatility_ann_pct"] == pytest.approx(returns.std(ddof=1) * math.sqrt(365) * 100)
    cagr = 1.3 ** (365.25 / 3) - 1
    assert stats["cagr_pct"] == pytest.approx(cagr * 100)
    assert stats["calmar"] == pytest.approx(cagr / 0.25)
    assert stats["n_trades"] == 0
    assert stats["win_rate_pct"] is None
    assert stats["profit_factor"] is None
    assert stats["exposure_pct"] == 0.0
    assert stats["commissions"] == 0.0


def test_initial_cash_counts_as_the_first_peak() -> None:
    stats = compute_stats(np.array([90.0, 95.0, 100.0]), days(3), no_trades(), np.ones(3), 100.0)
    assert stats["max_drawdown_pct"] == pytest.approx(-10.0)
    assert stats["equity_peak"] == 100.0
    assert stats["max_drawdown_duration_bars"] == 2  # from the start to the recovery on bar 2


def test_unrecovered_drawdown_runs_to_the_last_bar() -> None:
    stats = compute_stats(
        np.array([100.0, 110.0, 105.0, 100.0, 108.0]), days(5), no_trades(), np.ones(5), 100.0
    )
    assert stats["max_drawdown_duration_bars"] == 3
    assert stats["max_drawdown_pct"] == pytest.approx((100 / 110 - 1) * 100)


def test_trade_statistics_from_inputs() -> None:
    index = days(10)
    trades = make_trades(
        index,
        [
            (0, 2, "long", 100.0, 110.0, 1.0),  # +9
            (3, 5, "short", 110.0, 115.0, 1.0),  # -6
            (5, 7, "long", 115.0, 130.0, 2.0),  # +13
            (8, 9, "short", 130.0, 128.0, 4.0),  # -2
        ],
    )
    equity = np.linspace(1000, 1014, 10)
    stats = compute_stats(equity, index, trades, np.linspace(100, 128, 10), 1000.0)
    pnl = trades["pnl"].to_numpy()
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    assert stats["n_trades"] == 4
    assert stats["win_rate_pct"] == pytest.approx(len(wins) / len(pnl) * 100)
    assert stats["profit_factor"] == pytest.approx(wins.sum() / -losses.sum())
    assert stats["avg_win"] == pytest.approx(wins.mean())
    assert stats["avg_loss"] == pytest.approx(losses.mean())
    assert stats["expectancy"] == pytest.approx(pnl.mean())
    assert stats["avg_trade_pct"] == pytest.approx(trades["return_pct"].mean())
    assert stats["best_trade_pct"] == pytest.approx(trades["return_pct"].max())
    assert stats["worst_trade_pct"] == pytest.approx(trades["return_pct"].min())
    assert stats["commissions"] == pytest.approx(8.0)
    # Bars held: [0,2) [3,5) [5,7) [8,9) -> 0,1,3,4,5,6,8 = 7 of 10.
    assert stats["exposure_pct"] == pytest.approx(70.0)


def test_profit_factor_without_losers_is_none_and_same_bar_trade_counts_one_bar() -> None:
    index = days(5)
    trades = make_trades(index, [(2, 2, "long", 10.0, 11.0, 0.0)])
    stats = compute_stats(np.full(5, 100.0), index, trades, np.ones(5), 100.0)
    assert stats["profit_factor"] is None
    assert stats["avg_loss"] is None
    assert stats["win_rate_pct"] == 100.0
    assert stats["exposure_pct"] == pytest.approx(20.0)


def test_flat_equity_has_no_ratios_and_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compute_stats(np.full(50, 1000.0), days(50), no_trades(), np.full(50, 5.0), 1000.0)
    assert stats["sharpe"] is None
    assert stats["sortino"] is None
    assert stats["calmar"] is None
    assert stats["volatility_ann_pct"] == 0.0
    assert stats["max_drawdown_pct"] == 0.0
    assert stats["max_drawdown_duration_bars"] == 0
    assert stats["total_return_pct"] == 0.0
    assert stats["cagr_pct"] == 0.0


def test_single_bar_and_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compute_stats(np.array([101.0]), days(1), no_trades(), np.array([3.0]), 100.0)
    assert set(stats) == EXPECTED_KEYS
    assert stats["bars"] == 1
    assert stats["bars_per_year"] is None
    assert stats["sharpe"] is None
    assert stats["cagr_pct"] is None
    assert stats["total_return_pct"] == pytest.approx(1.0)
    assert stats["buy_hold_return_pct"] == 0.0


def test_blown_account_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = compute_stats(np.array([50.0, 0.0, 0.0]), days(3), no_trades(), np.ones(3), 100.0)
    assert stats["max_drawdown_pct"] == -100.0
    assert stats["cagr_pct"] == -100.0


def test_length_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        compute_stats(np.ones(3), days(4), no_trades(), np.ones(3), 1.0)


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (pd.date_range("2024-01-01", periods=30, freq="D", tz="UTC"), 365.0),
        (pd.bdate_range("2024-01-01", periods=30, tz="UTC"), 252.0),
        (pd.date_range("2024-01-01", periods=30, freq="1min", tz="UTC"), 365 * 24 * 60.0),
        (pd.date_range("2024-01-01", periods=30, freq="1h", tz="UTC"), 365 * 24.0),
        (pd.date_range("2024-01-01", periods=30, freq="7D", tz="UTC"), 365 / 7),
    ],
)
def test_bars_per_year_inference(index: pd.DatetimeIndex, expected: float) -> None:
    assert infer_bars_per_year(index) == pytest.approx(expected)


def test_bars_per_year_for_stock_minutes_with_session_gaps() -> None:
    sessions = [
        pd.date_range(f"2024-01-{day:02d} 14:30", periods=390, freq="1min", tz="UTC")
        for day in (2, 3, 4, 5, 8)
    ]
    index = sessions[0].append(sessions[1:])
    assert infer_bars_per_year(pd.DatetimeIndex(index)) == pytest.approx(365 * 24 * 60.0)


def test_bars_per_year_for_ticks_sharing_timestamps() -> None:
    # Three trades per second, two of them in the same instant as the one before: the median step is
    # 0, so the mean spacing (about a third of a second) sets the scale.
    seconds = pd.date_range("2024-01-01", periods=100, freq="1s", tz="UTC")
    index = pd.DatetimeIndex(np.repeat(seconds.to_numpy(), 3))
    assert infer_bars_per_year(index) == pytest.approx(365 * 86_400 * 299 / 99)  # 299 steps over 99 s
    with pytest.raises(ValueError, match="increasing"):
        infer_bars_per_year(pd.DatetimeIndex([seconds[0]] * 5))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=1.0, max_value=1e6, allow_nan=False), min_size=1, max_size=200))
def test_drawdown_properties(values: list[float]) -> None:
    equity = np.asarray(values)
    dd = drawdown_series(equity)
    assert dd.shape == equity.shape
    assert (dd <= 0).all()
    assert (dd >= -1).all()
    peak = np.maximum.accumulate(equity)
    np.testing.assert_allclose(equity, peak * (1 + dd), rtol=1e-9, atol=1e-9)
    stats = compute_stats(equity, days(len(equity)), no_trades(), equity, float(equity[0]))
    assert stats["max_drawdown_pct"] == pytest.approx(dd.min() * 100)


def vectorised_curve_statistics(equity: np.ndarray, initial: float) -> dict[str, float]:
    """The curve statistics by their numpy definitions (whole-curve temporaries): what the one-pass
    compiled loop must agree with."""
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.concatenate(([equity[0] / initial], equity[1:] / equity[:-1])) - 1.0
    dd = drawdown_series(equity, initial=initial)
    under = np.concatenate(([0], (dd < 0).astype(np.int8), [0]))
    edges = np.diff(under)
    peaks = np.maximum(np.flatnonzero(edges == 1) - 1, 0)
    recoveries = np.minimum(np.flatnonzero(edges == -1), len(equity) - 1)
    longest = int(np.argmax(recoveries - peaks)) if len(peaks) else -1
    return {
        "mean": float(returns.mean()),
        "std": float(returns.std(ddof=1)) if len(returns) > 1 else math.nan,
        "downside": float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))),
        "max_drawdown": min(float(dd.min()), 0.0),
        "peak_bar": int(peaks[longest]) if longest >= 0 else 0,
        "recovery_bar": int(recoveries[longest]) if longest >= 0 else 0,
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=1.0, max_value=1e6, allow_nan=False), min_size=1, max_size=300),
    st.floats(min_value=1.0, max_value=1e6),
    st.booleans(),
)
def test_one_pass_curve_statistics_match_their_vectorised_definitions(
    values: list[float], initial: float, repeats: bool
) -> None:
    """The statistics `compute_stats` reads from the curve come from one compiled pass (no curve-sized
    temporaries): the same returns' mean, sample std and downside, the same deepest drawdown, and the
    same longest underwater spell (the first of equally long ones) as the vectorised definitions."""
    from tradebot.backtest.metrics import _curve_stats

    equity = np.repeat(np.asarray(values), 3) if repeats else np.asarray(values)  # flat stretches
    got = _curve_stats(equity, initial)
    want = vectorised_curve_statistics(equity, initial)
    assert got.returns_finite
    assert got.mean_return == pytest.approx(want["mean"], rel=1e-9, abs=1e-12)
    if len(equity) > 1:
        assert got.std_return == pytest.approx(want["std"], rel=1e-7, abs=1e-12)
    assert got.downside == pytest.approx(want["downside"], rel=1e-9, abs=1e-12)
    assert got.max_drawdown == want["max_drawdown"]
    assert (got.peak_bar, got.recovery_bar) == (want["peak_bar"], want["recovery_bar"])


def test_one_pass_curve_statistics_of_a_blown_account() -> None:
    from tradebot.backtest.metrics import _curve_stats

    got = _curve_stats(np.array([100.0, 0.0, 0.0, 50.0]), 100.0)
    assert not got.returns_finite  # 0 / 0: the ratios are left undefined
    assert got.max_drawdown == -1.0
    assert (got.peak_bar, got.recovery_bar) == (0, 3)


def test_ten_million_bars() -> None:
    # Their speed is measured by `make bench` (tests/benchmarks/test_whole_process_bench.py).
    n = 10_000_000
    rng = np.random.default_rng(0)
    equity = 1e4 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    index = pd.DatetimeIndex(pd.date_range("2000-01-01", periods=n, freq="1min", tz="UTC"))
    stats = compute_stats(equity, index, no_trades(), equity, 1e4)
    assert stats["bars"] == n
    assert stats["bars_per_year"] == 525_600.0
