"""`--timeframe auto`, the default of `tradebot backtest` and `tradebot sweep`: bar data trades on bars of
its own interval, so a stop sees each bar's low and high (issue 16 item 10); ticks trade as ticks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebot.backtest.cliargs import AUTO_TIMEFRAME
from tradebot.backtest.data import (
    AUTO,
    Bars,
    at_timeframe,
    data_interval_ns,
    load_market_data,
    resolve_timeframe,
    synthetic_ohlcv,
    write_ohlcv_csv,
)
from tradebot.cli import main

STOP_PCT = 5.0
FLAGS = ["--short-window", "2", "--long-window", "3", "--stop-loss-pct", str(STOP_PCT), "--json"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def business_days(n: int) -> pd.DatetimeIndex:
    """Weekdays only: steps of 1 day, and of 3 days over each weekend."""
    return pd.bdate_range("2024-01-01", periods=n, tz="UTC")


def daily_stop_file(tmp_path: Path) -> tuple[Path, float, pd.Timestamp]:
    """Daily bars where a 2/3 SMA cross buys at the close of bar 4 (102), and bar 5's low (90) crosses a
    5% stop (96.9) while its close (98) does not; no later close is below the stop either."""
    close = np.array([110.0, 105.0, 100.0, 99.0, 102.0, 98.0, 99.0, 100.0, 101.0, 102.0])
    frame = pd.DataFrame(
        {"open": close, "high": close + 0.5, "low": close - 0.5, "close": close, "volume": 1.0},
        index=business_days(len(close)),
    )
    frame.loc[frame.index[5], ["open", "high", "low"]] = [99.0, 99.5, 90.0]
    path = tmp_path / "daily.csv"
    write_ohlcv_csv(frame, path)
    return path, 102.0 * (1 - STOP_PCT / 100), frame.index[5]


def test_a_daily_low_through_the_stop_exits_at_the_stop_level_by_default_and_not_on_tick(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, stop, stop_day = daily_stop_file(tmp_path)
    code, out, err = run_cli(capsys, "backtest", "--data", str(path), *FLAGS)
    assert code == 0, err
    result = json.loads(out)
    assert (result["params"]["timeframe"], result["params"]["timeframe_why"]) == (
        "1d",
        "auto: the data's own interval",
    )
    (trade, *_) = result["trades"]
    assert trade["entry_price"] == 102.0
    assert trade["exit_reason"] == "stop_loss"
    assert trade["exit_price"] == pytest.approx(stop)
    assert pd.Timestamp(trade["exit_time"]) == stop_day

    code, out, err = run_cli(capsys, "backtest", "--data", str(path), *FLAGS, "--timeframe", "tick")
    assert code == 0, err
    ticked = json.loads(out)
    assert (ticked["params"]["timeframe"], ticked["params"]["timeframe_why"]) == ("tick", None)
    # Closes only: 98 is above the stop, so the position is never stopped out.
    assert all(t["exit_reason"] != "stop_loss" for t in ticked["trades"])


def test_the_text_report_names_the_resolved_timeframe_and_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, _, _ = daily_stop_file(tmp_path)
    code, out, err = run_cli(capsys, "backtest", "--data", str(path), *FLAGS[:-1])
    assert code == 0, err
    assert "timeframe 1d (auto: the data's own interval)" in " ".join(out.split())
    code, out, err = run_cli(capsys, "backtest", "--data", str(path), *FLAGS[:-1], "--timeframe", "1d")
    assert code == 0, err
    assert "timeframe 1d, fill" in " ".join(out.split())


def test_interval_inference_daily_with_weekends_and_one_minute(tmp_path: Path) -> None:
    daily = tmp_path / "daily.csv"
    write_ohlcv_csv(synthetic_ohlcv(300, seed=1).set_axis(business_days(300)), daily)
    minutes = tmp_path / "minutes.csv"
    # One-minute bars with a missing hour: the common step wins over the gap.
    frame = synthetic_ohlcv(500, seed=2, freq="1min")
    write_ohlcv_csv(frame.drop(frame.index[100:160]), minutes)
    for path, timeframe in ((daily, "1d"), (minutes, "1m")):
        data = load_market_data(path)
        resolved = resolve_timeframe(data, AUTO)
        assert (resolved.timeframe, resolved.warning) == (timeframe, None)
        assert resolved.label() == f"{timeframe} (auto: the data's own interval)"


def test_an_interval_that_is_no_timeframe_falls_back_to_tick_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "ten_minutes.csv"
    write_ohlcv_csv(synthetic_ohlcv(200, seed=3, freq="10min"), path)
    resolved = resolve_timeframe(load_market_data(path), AUTO)
    assert resolved.timeframe == "tick"
    assert resolved.warning is not None
    code, out, err = run_cli(capsys, "backtest", "--data", str(path), *FLAGS)
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if "warning" in line]
    assert "the data is 10m bars, which is no bar timeframe" in warning
    assert "--timeframe tick" in warning
    assert "--timeframe 30m" in warning
    assert json.loads(out)["params"]["timeframe"] == "tick"


def test_ticks_resolve_to_tick_and_explicit_choices_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    stamps = pd.date_range("2024-01-01", periods=50, freq="1min", tz="UTC")
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "price": np.arange(50) + 100.0}).to_csv(
        path, index=False
    )
    data = load_market_data(path)
    assert resolve_timeframe(data, AUTO).timeframe == "tick"
    assert resolve_timeframe(data, "5m") == resolve_timeframe(data, "5m")
    assert (resolve_timeframe(data, "5m").timeframe, resolve_timeframe(data, "5m").why) == ("5m", None)
    assert AUTO == AUTO_TIMEFRAME


def test_daily_bars_at_their_own_timeframe_keep_their_stamps_and_ohlc(tmp_path: Path) -> None:
    # Weekends, and a local midnight whose UTC offset moves with daylight saving (23 and 25 hour steps).
    local = pd.bdate_range("2024-03-01", "2024-11-29", tz="America/New_York")
    frame = synthetic_ohlcv(len(local), seed=4).set_axis(local.tz_convert("UTC"))
    path = tmp_path / "local_daily.csv"
    write_ohlcv_csv(frame, path)
    data = load_market_data(path)
    assert isinstance(data, Bars)
    assert data_interval_ns(data) == 86_400 * 10**9
    assert resolve_timeframe(data, AUTO).timeframe == "1d"
    assert at_timeframe(data, "1d", path) is data


def test_a_default_sweep_gives_the_single_runs_results(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "daily.csv"
    write_ohlcv_csv(
        synthetic_ohlcv(600, seed=5, freq="1D", volatility=0.4).set_axis(business_days(600)), path
    )
    code, out, err = run_cli(
        capsys, "sweep", "--data", str(path), "--short-window", "3,5", "--long-window", "20,30",
        "--stop-loss-pct", "1,2", "--json", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    sweep = json.loads(out)
    assert (sweep["timeframe"], sweep["timeframe_why"]) == ("1d", "auto: the data's own interval")
    assert len(sweep["results"]) == 8
    stopped = 0
    for row in sweep["results"]:
        code, single, err = run_cli(
            capsys, "backtest", "--data", str(path), "--short-window", str(row["short_window"]),
            "--long-window", str(row["long_window"]), "--stop-loss-pct", str(row["stop_loss_pct"]), "--json",
        )  # fmt: skip
        assert code == 0, err
        result = json.loads(single)
        stats = result["stats"]
        assert row["n_trades"] == stats["n_trades"]
        # The sweep's table is rounded to 10 decimals.
        for key in ("total_return_pct", "max_drawdown_pct", "sharpe"):
            assert row[key] == pytest.approx(stats[key], rel=1e-9, abs=1e-9), key
        # The stops filled inside bars (at a level, not a close): the sweep too ran on 1d bars.
        closes = set(load_market_data(path).close.tolist())  # type: ignore[union-attr]
        stopped += sum(
            t["exit_reason"] == "stop_loss" and t["exit_price"] not in closes for t in result["trades"]
        )
    assert stopped > 0


def test_walk_forward_names_the_resolved_timeframe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "daily.csv"
    write_ohlcv_csv(synthetic_ohlcv(800, seed=6, freq="1D").set_axis(business_days(800)), path)
    code, out, err = run_cli(
        capsys, "sweep", "--data", str(path), "--short-window", "3,5", "--long-window", "20,30",
        "--walk-forward", "2", "--json", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["timeframe"] == "1d"


@pytest.mark.parametrize("command", ["backtest", "sweep"])
def test_help_says_what_auto_does(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "auto (the default): bar data (OHLC columns) trades on bars of its own interval" in text
    assert "falls back to tick with a warning" in text
    assert "on a bar --timeframe (1s ... 1d, and auto on bar data)" in text
