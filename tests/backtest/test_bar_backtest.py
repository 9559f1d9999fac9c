"""Backtests on bars of a timeframe: stops see each bar's high and low, a bar reaching both the stop and the
target exits by the named rule, and `tradebot backtest --timeframe` aggregates finer data (never coarser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebot.backtest.data import Bars, DataError, at_timeframe, load_market_data, write_ohlcv_csv
from tradebot.backtest.engine import BacktestConfig, RawResult, run_reference
from tradebot.backtest.kernel import run_kernel
from tradebot.cli import main
from tradebot.core.params import StrategyParams

ENGINES = {"reference": run_reference, "kernel": run_kernel}


def hand_built(third: tuple[float, float, float, float]) -> pd.DataFrame:
    """Hourly bars: closes 100, 99, 100 make the 1/2 SMAs cross up at bar 2's close; bar 3 is `third`
    (open, high, low, close); bar 4 closes flat, so no cross follows."""
    rows = [(100.0, 100.0, 100.0, 100.0), (99.0, 99.0, 99.0, 99.0), (100.0, 100.0, 100.0, 100.0), third]
    rows.append((100.0, 100.0, 100.0, 100.0))
    index = pd.date_range("2024-01-01", periods=len(rows), freq="1h", tz="UTC", name="ts")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index)
    frame["volume"] = 1.0
    return frame


def run(engine: str, bars: pd.DataFrame, fill: str = "close", **params: object) -> RawResult:
    base: dict[str, object] = {
        "short_window": 1,
        "long_window": 2,
        "stop_loss_pct": 10,
        "take_profit_pct": 20,
    }
    config = BacktestConfig(StrategyParams.model_validate({**base, **params}), fill=fill)  # type: ignore[arg-type]
    return ENGINES[engine](bars, config)


def only_trade(result: RawResult) -> tuple[str, float, pd.Timestamp, float]:
    assert len(result.trades) == 1
    trade = result.trades.iloc[0]
    return (
        str(trade["exit_reason"]),
        float(trade["exit_price"]),
        pd.Timestamp(trade["entry_time"]),
        float(trade["entry_price"]),
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("exit_rule", "open_", "reason", "price"),
    [
        ("stop-first", 100.0, "stop_loss", 90.0),
        ("target-first", 100.0, "take_profit", 120.0),
        ("open-nearest", 100.0, "stop_loss", 90.0),  # the open is 10 from the stop, 20 from the target
        ("open-nearest", 115.0, "take_profit", 120.0),  # 25 from the stop, 5 from the target
        ("stop-first", 115.0, "stop_loss", 90.0),
    ],
)
def test_a_bar_touching_both_levels_exits_by_the_named_rule(
    engine: str, exit_rule: str, open_: float, reason: str, price: float
) -> None:
    bars = hand_built((open_, 125.0, 85.0, 100.0))  # long from 100: stop 90, target 120
    assert only_trade(run(engine, bars, timeframe="1h", exit_rule=exit_rule))[:2] == (reason, price)


@pytest.mark.parametrize("engine", ENGINES)
def test_next_open_enters_at_the_next_bars_open_and_its_range_is_checked_at_once(engine: str) -> None:
    bars = hand_built((100.0, 125.0, 85.0, 100.0))
    for exit_rule, expected in (
        ("stop-first", ("stop_loss", 90.0)),
        ("target-first", ("take_profit", 120.0)),
    ):
        reason, exit_price, entry_time, entry_price = only_trade(
            run(engine, bars, "next-open", timeframe="1h", exit_rule=exit_rule)
        )
        assert (reason, exit_price, entry_time, entry_price) == (*expected, bars.index[3], 100.0)
    _, _, entry_time, entry_price = only_trade(run(engine, bars, "close", timeframe="1h"))
    assert (entry_time, entry_price) == (bars.index[2], 100.0)  # the crossing bar's close


@pytest.mark.parametrize("engine", ENGINES)
def test_bar_stops_see_the_high_and_low_where_the_tick_timeframe_sees_the_close(engine: str) -> None:
    bars = hand_built((100.0, 101.0, 88.0, 100.0))  # dips through the stop (90), closes back at 100
    assert only_trade(run(engine, bars, timeframe="1h"))[:2] == ("stop_loss", 90.0)
    # Each row one price (today's behaviour): the close never reached the stop.
    assert only_trade(run(engine, bars, timeframe="tick"))[:2] == ("end_of_data", 100.0)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_gap_through_the_stop_fills_at_the_open(engine: str) -> None:
    bars = hand_built((80.0, 101.0, 78.0, 100.0))
    assert only_trade(run(engine, bars, timeframe="1h"))[:2] == ("stop_loss", 80.0)
    gap_up = hand_built((130.0, 131.0, 99.0, 100.0))
    assert only_trade(run(engine, gap_up, timeframe="1h", exit_rule="stop-first"))[:2] == (
        "take_profit",
        130.0,
    )


# ------------------------------------------------------------------------------- --timeframe on the CLI


def ticks_file(tmp_path: Path, n: int = 30_000, seed: int = 4) -> tuple[Path, pd.DataFrame]:
    """Ticks at irregular times (several per second at times, quiet minutes at others) on a random walk."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-05-01T00:00:00Z").value
    ts = start + np.cumsum(rng.exponential(0.9, n) * 10**9).astype(np.int64)
    price = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
    price = np.round(price, 2)
    size = rng.integers(1, 20, n).astype(np.float64)
    index = pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC")
    frame = pd.DataFrame({"price": price, "size": size}, index=index)
    path = tmp_path / "ticks.csv"
    stamps = index.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path.write_text(
        "timestamp,price,size\n"
        + "".join(f"{t},{p!r},{s:g}\n" for t, p, s in zip(stamps, frame["price"], frame["size"], strict=True))
    )
    return path, frame


def resampled(ticks: pd.DataFrame, rule: str) -> pd.DataFrame:
    grouped = ticks.resample(rule, label="left", closed="left")
    bars = grouped["price"].ohlc()
    bars["volume"] = grouped["size"].sum()
    return bars.dropna(subset=["open"])


def backtest_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    code = main(["backtest", *args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result: dict[str, object] = json.loads(out)
    return result


STRATEGY = [
    "--short-window",
    "5",
    "--long-window",
    "20",
    "--stop-loss-pct",
    "0.4",
    "--take-profit-pct",
    "0.6",
]


@pytest.mark.parametrize("fill", ["close", "next-open"])
def test_timeframe_aggregates_ticks_and_finer_bars_and_leaves_bars_at_it_unchanged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fill: str
) -> None:
    ticks_path, ticks = ticks_file(tmp_path)
    minute_bars = tmp_path / "minute.csv"
    write_ohlcv_csv(resampled(ticks, "1min"), minute_bars)
    second_bars = tmp_path / "seconds.csv"
    write_ohlcv_csv(resampled(ticks, "1s"), second_bars)
    flags = [*STRATEGY, "--fill", fill, "--timeframe", "1m"]
    from_seconds = backtest_json(capsys, "--data", str(second_bars), *flags)
    assert from_seconds["stats"]["bars"] == len(resampled(ticks, "1min"))  # type: ignore[index]
    reasons = {trade["exit_reason"] for trade in from_seconds["trades"]}  # type: ignore[attr-defined]
    assert {"stop_loss", "take_profit"} <= reasons
    # The same bars, whether the file held 1s bars or the 1m bars themselves.
    assert backtest_json(capsys, "--data", str(minute_bars), *flags) == from_seconds
    assert from_seconds["params"]["timeframe"] == "1m"  # type: ignore[index]
    from_ticks = backtest_json(capsys, "--data", str(ticks_path), *flags)
    assert from_ticks["stats"]["bars"] == from_seconds["stats"]["bars"]  # type: ignore[index]
    if fill == "next-open":
        # No live counterpart: the ticks are aggregated and the stops see each bar's range.
        assert from_ticks == from_seconds
        return
    # Filled at the close, tick data trades as the live strategy: signals on the bars, stops on every
    # tick, filled at the price of the tick that reached them (not at the level a bar range implies).
    tick_prices = set(ticks["price"].tolist())
    stops = [t for t in from_ticks["trades"] if t["exit_reason"] in ("stop_loss", "take_profit")]  # type: ignore[attr-defined]
    assert stops
    assert all(t["exit_price"] in tick_prices for t in stops)
    bar_stops = [t for t in from_seconds["trades"] if t["exit_reason"] in ("stop_loss", "take_profit")]  # type: ignore[attr-defined]
    assert any(t["exit_price"] not in tick_prices for t in bar_stops)


def test_bars_already_at_the_timeframe_are_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "hourly.csv"
    write_ohlcv_csv(resampled(ticks_file(tmp_path, 20_000)[1], "1h"), path)
    data = load_market_data(path)
    assert isinstance(data, Bars)
    assert at_timeframe(data, "1h", path) is data
    assert at_timeframe(data, "tick", path) is data
    assert len(at_timeframe(data, "4h", path)) < len(data)


@pytest.mark.parametrize(
    ("data_rule", "timeframe", "said"),
    [
        ("1h", "15m", "the data is 1h bars, coarser than --timeframe 15m"),
        ("1d", "4h", "the data is 1d bars, coarser than --timeframe 4h"),
        ("3min", "5m", "--timeframe 5m is not a whole number of the data's 3m bars"),
    ],
)
def test_coarser_data_than_the_timeframe_is_an_error_naming_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_rule: str, timeframe: str, said: str
) -> None:
    index = pd.date_range("2024-01-01", periods=200, freq=data_rule, tz="UTC")
    close = 100 + np.sin(np.arange(200) / 5)
    path = tmp_path / "bars.csv"
    write_ohlcv_csv(
        pd.DataFrame({"open": close, "high": close, "low": close, "close": close}, index=index), path
    )
    code = main(["backtest", "--data", str(path), *STRATEGY, "--timeframe", timeframe])
    _, err = capsys.readouterr()
    assert code == 2
    assert said in err
    assert "Traceback" not in err
    data = load_market_data(path)
    with pytest.raises(DataError, match=re.escape(said)):
        at_timeframe(data, timeframe, path)


def test_the_reports_say_the_timeframe_and_the_exit_rule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ticks_path, _ = ticks_file(tmp_path, 5_000)
    flags = ["--data", str(ticks_path), *STRATEGY, "--timeframe", "1m", "--exit-rule", "open-nearest"]
    assert main(["backtest", *flags]) == 0
    out, _ = capsys.readouterr()
    assert "timeframe 1m, fill close, exit rule open-nearest" in out
    params = backtest_json(capsys, *flags)["params"]
    assert (params["exit_rule"], params["timeframe"]) == ("open-nearest", "1m")  # type: ignore[index]


def test_a_sweep_on_a_timeframe_sweeps_the_aggregated_bars(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ticks_path, ticks = ticks_file(tmp_path, 20_000)
    minute_bars = tmp_path / "minute.csv"
    write_ohlcv_csv(resampled(ticks, "1min"), minute_bars)
    grid = [
        "--short-window",
        "3,5",
        "--long-window",
        "12,20",
        "--stop-loss-pct",
        "0.3",
        "--json",
        "--no-progress",
    ]
    tables = []
    for path in (ticks_path, minute_bars):
        code = main(["sweep", "--data", str(path), *grid, "--timeframe", "1m", "--exit-rule", "target-first"])
        out, err = capsys.readouterr()
        assert code == 0, err
        tables.append(json.loads(out)["results"])
    assert tables[0] == tables[1]
    assert len(tables[0]) == 4
    code = main(["sweep", "--data", str(minute_bars), *grid, "--timeframe", "15s"])
    assert code == 2
    assert "the data is 1m bars, coarser than --timeframe 15s" in capsys.readouterr().err
