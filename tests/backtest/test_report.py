"""JSON, terminal and PNG reports."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import orjson
import pandas as pd
import pytest
from rich.console import Console
from rich.table import Table

from tradebot.backtest.data import synthetic_ohlcv
from tradebot.backtest.metrics import compute_stats
from tradebot.backtest.report import (
    plot_equity_drawdown,
    plot_price_with_trades,
    plot_sweep_heatmap,
    print_report,
    render_stats_table,
    result_json,
    result_to_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

Run = tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]


def sample_run(n: int = 300) -> Run:
    bars = synthetic_ohlcv(n, seed=4, freq="1h")
    close = bars["close"].to_numpy()
    short_ma = pd.Series(close).rolling(5).mean().to_numpy()
    long_ma = pd.Series(close).rolling(20).mean().to_numpy()
    index = pd.DatetimeIndex(bars.index)
    entries = np.arange(20, n - 10, max(1, n // 12))
    exits = entries + 5
    sides = np.where(np.arange(len(entries)) % 2 == 0, "long", "short")
    sign = np.where(sides == "long", 1.0, -1.0)
    pnl = sign * (close[exits] - close[entries]) - 0.1
    trades = pd.DataFrame(
        {
            "entry_time": index[entries],
            "exit_time": index[exits],
            "entry_bar": entries,
            "exit_bar": exits,
            "side": sides,
            "qty": np.ones(len(entries)),
            "entry_price": close[entries],
            "exit_price": close[exits],
            "pnl": pnl,
            "return_pct": pnl / close[entries] * 100,
            "exit_reason": np.where(np.arange(len(entries)) % 3 == 0, "stop_loss", "exit_cross"),
            "commission": np.full(len(entries), 0.1),
        }
    )
    return bars, close, short_ma, long_ma, trades


@pytest.fixture
def run() -> Run:
    return sample_run()


def assert_png(path: Path) -> None:
    assert path.exists()
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1_000


# ------------------------------------------------------------------------------------------------- JSON


def test_json_has_required_keys_and_round_trips(run: Run) -> None:
    bars, close, _, _, trades = run
    equity = np.linspace(10_000, 10_500, len(close))
    stats = compute_stats(equity, pd.DatetimeIndex(bars.index), trades, close, 10_000.0)
    params = {"short": np.int64(5), "long": 20, "stop": np.float64(0.02), "name": "ma", "bad": float("nan")}
    text = result_to_json(stats, trades, params)
    doc = json.loads(text)
    assert set(doc) == {"stats", "trades", "params"}
    assert set(doc["stats"]) == set(stats)
    assert doc["params"] == {"short": 5, "long": 20, "stop": 0.02, "name": "ma", "bad": None}
    assert len(doc["trades"]) == len(trades)
    first = doc["trades"][0]
    assert set(first) == set(trades.columns)
    assert pd.Timestamp(first["entry_time"]) == trades["entry_time"].iloc[0]
    assert pd.Timestamp(first["exit_time"]) == trades["exit_time"].iloc[0]
    assert isinstance(first["entry_bar"], int)
    assert first["pnl"] == pytest.approx(float(trades["pnl"].iloc[0]))


def test_json_replaces_nan_and_inf_with_null() -> None:
    stats = {"sharpe": float("nan"), "x": np.float64("inf"), "n": np.int32(3), "s": None}
    trades = pd.DataFrame(
        {
            "entry_time": [pd.Timestamp("2024-01-01", tz="UTC")],
            "exit_time": [pd.NaT],
            "return_pct": [np.nan],
        }
    )
    text = result_to_json(stats, trades, {})
    assert "NaN" not in text
    assert "Infinity" not in text
    doc = json.loads(text)
    assert doc["stats"] == {"sharpe": None, "x": None, "n": 3, "s": None}
    assert doc["trades"] == [
        {"entry_time": "2024-01-01T00:00:00+00:00", "exit_time": None, "return_pct": None}
    ]


def dict_per_trade(trades: pd.DataFrame) -> list[dict[str, object]]:
    """The trades as one plain dict each, converted value by value: what the encoder must equal."""

    def plain(value: object) -> object:
        if value is pd.NaT or value is None:
            return None
        if isinstance(value, pd.Timestamp):
            return value.tz_convert("UTC").isoformat() if value.tzinfo else value.isoformat() + "+00:00"
        return value.item() if isinstance(value, np.generic) else value

    return [{str(k): plain(v) for k, v in row.items()} for row in trades.to_dict("records")]


@pytest.mark.parametrize("indent", [True, False])
def test_json_trades_are_byte_for_byte_what_orjson_writes_for_a_dict_per_trade(
    run: Run, indent: bool
) -> None:
    """The trade array is put together from each column's encoded values (no dict per trade): it must be
    exactly orjson's text for the dicts, with times in seconds, microseconds and nanoseconds, NaT, NaN,
    inf, negative zero, tiny and huge floats, integers, booleans, text with quotes and commas, None."""
    _, _, _, _, trades = run
    trades = trades.copy()
    n = len(trades)
    odd = np.array([np.nan, np.inf, -0.0, 5e-324, 1e22, 0.1 + 0.2, -1.5e-7], dtype=np.float64)
    trades["return_pct"] = np.resize(odd, n)
    trades["exit_time"] = trades["exit_time"].where(np.arange(n) % 4 != 1)  # NaT
    # A column is written at one unit, the coarsest that keeps each of its times exact (as isoformat()
    # writes a time whose microseconds, or nanoseconds, are not zero).
    trades["entry_time"] = trades["entry_time"] + pd.to_timedelta((np.arange(n) + 1) * 1_001, unit="us")
    trades["naive_time"] = pd.to_datetime(np.arange(n) * 7 + 1_700_000_000_000_000_123, unit="ns")
    edges = [
        "1969-12-31T23:59:59.5",
        "1900-02-28T12:00:00.25",
        "1677-09-22T00:00:00.000007",
        "2262-04-10T01:02:03.4",
    ]
    far_times = pd.to_datetime(edges, format="ISO8601")
    trades["old_time"] = np.resize(far_times.to_numpy(), n)
    trades["all_nat"] = pd.Series([pd.NaT] * n, dtype="datetime64[ns]")
    trades["won"] = trades["pnl"].to_numpy() > 0
    trades["note"] = np.resize(np.array(['say "hi", then go', "plain", None, "ünï"], dtype=object), n)
    trades["count"] = np.arange(n, dtype=np.int32) - 3
    stats = {"n_trades": n, "start": "2024-01-01T00:00:00+00:00", "odd": 'the "trades": [] key'}
    params = {"short_window": 5, "name": "ma"}
    option = orjson.OPT_INDENT_2 if indent else 0
    expected = orjson.dumps(
        {"stats": stats, "trades": dict_per_trade(trades), "params": params}, option=option
    )
    assert result_json(stats, trades, params, indent=indent) == expected
    one = trades.iloc[:1]
    assert result_json(stats, one, params, indent=indent) == orjson.dumps(
        {"stats": stats, "trades": dict_per_trade(one), "params": params}, option=option
    )


def test_json_with_no_trades() -> None:
    doc = json.loads(result_to_json({"n_trades": 0}, pd.DataFrame(), {"a": 1}))
    assert doc == {"stats": {"n_trades": 0}, "trades": [], "params": {"a": 1}}


# ---------------------------------------------------------------------------------------------- terminal


def test_stats_table_groups_metrics(run: Run) -> None:
    bars, close, _, _, trades = run
    stats = compute_stats(close * 100, pd.DatetimeIndex(bars.index), trades, close, 10_000.0)
    table = render_stats_table(stats)
    assert isinstance(table, Table)
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(table)
    text = buffer.getvalue()
    for heading in ("Returns", "Risk", "Trades"):
        assert heading in text
    assert "Sharpe" in text
    assert "Max drawdown [%]" in text


def test_print_report_shows_last_ten_trades(run: Run) -> None:
    bars, close, _, _, trades = run
    stats = compute_stats(close, pd.DatetimeIndex(bars.index), trades, close, float(close[0]))
    buffer = io.StringIO()
    print_report(stats, trades, Console(file=buffer, width=160, color_system=None))
    text = buffer.getvalue()
    assert f"Last 10 of {len(trades)} trades" in text
    assert trades["exit_time"].iloc[-1].strftime("%Y-%m-%d %H:%M") in text
    assert trades["entry_time"].iloc[0].strftime("%Y-%m-%d %H:%M") not in text


def test_print_report_without_trades() -> None:
    buffer = io.StringIO()
    print_report(
        {"n_trades": 0, "sharpe": None}, pd.DataFrame(), Console(file=buffer, width=100, color_system=None)
    )
    assert "no trades" in buffer.getvalue()


# ------------------------------------------------------------------------------------------------- plots


def test_price_plot_writes_png(tmp_path: Path, run: Run) -> None:
    bars, close, short_ma, long_ma, trades = run
    figures_before = plt.get_fignums()
    out = plot_price_with_trades(
        tmp_path / "nested" / "price.png", pd.DatetimeIndex(bars.index), close, short_ma, long_ma, trades
    )
    assert out == tmp_path / "nested" / "price.png"
    assert_png(out)
    assert plt.get_fignums() == figures_before  # nothing left open


def test_price_plot_downsamples_long_series(tmp_path: Path) -> None:
    big = synthetic_ohlcv(300_000, seed=2)
    close = big["close"].to_numpy()
    index = pd.DatetimeIndex(big.index)
    trades = pd.DataFrame(
        {
            "entry_time": [index[10]],
            "exit_time": [index[250_000]],
            "side": ["short"],
            "entry_price": [close[10]],
            "exit_price": [close[250_000]],
            "exit_reason": ["trailing_stop"],
        }
    )
    assert_png(plot_price_with_trades(tmp_path / "big.png", index, close, None, close, trades))


def test_price_plot_without_trades(tmp_path: Path) -> None:
    bars, close, short_ma, long_ma, _ = sample_run(50)
    assert_png(
        plot_price_with_trades(
            tmp_path / "p.png", pd.DatetimeIndex(bars.index), close, short_ma, long_ma, pd.DataFrame()
        )
    )


def test_equity_drawdown_plot(tmp_path: Path, run: Run) -> None:
    bars, close, _, _, _ = run
    equity = 10_000 * close / close[0] * (1 + 0.01 * np.sin(np.arange(len(close)) / 7))
    buy_hold = 10_000 * close / close[0]
    assert_png(plot_equity_drawdown(tmp_path / "eq.png", pd.DatetimeIndex(bars.index), equity, buy_hold))
    assert_png(plot_equity_drawdown(tmp_path / "eq2.png", pd.DatetimeIndex(bars.index), equity, None))


def test_sweep_heatmap_with_missing_cells(tmp_path: Path) -> None:
    rows = [
        {"short": s, "long": lng, "sharpe": (s - lng / 10) / 3 if (s, lng) != (5, 40) else math.nan}
        for s in (2, 5, 10)
        for lng in (20, 40, 60, 80)
        if s < lng and (s, lng) != (10, 80)
    ]
    table = pd.DataFrame(rows)
    assert_png(plot_sweep_heatmap(tmp_path / "heat" / "sweep.png", table, "short", "long", "sharpe"))


def test_sweep_heatmap_unknown_column(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="nope"):
        plot_sweep_heatmap(
            tmp_path / "x.png", pd.DataFrame({"a": [1], "b": [2], "m": [3.0]}), "a", "b", "nope"
        )


def test_cells_show_counts_as_integers_and_numbers_with_two_decimals() -> None:
    from tradebot.backtest.report import format_cell

    assert format_cell("n_trades", 47.0) == "47"
    assert format_cell("out_of_sample_trades", 3.0) == "3"
    assert format_cell("short_window", 10.0) == "10"
    assert format_cell("max_drawdown_duration_bars", 1401) == "1,401"
    assert format_cell("qty", 93.0) == "93"
    assert format_cell("qty", 0.125) == "0.125"
    assert format_cell("in_sample_sharpe", 1.32403) == "1.324"
    assert format_cell("equity_final", 71924.92) == "71,924.92"
    assert format_cell("duration_days", 3116.0) == "3,116"
    assert format_cell("pnl", float("nan")) == "—"
    assert format_cell("entry_time", pd.Timestamp("2012-12-03", tz="UTC")) == "2012-12-03 00:00"
