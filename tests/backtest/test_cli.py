"""The `tradebot backtest` / `tradebot sweep` contract that scripts rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pandas as pd
import pytest

from tradebot.backtest.data import synthetic_ohlcv, write_ohlcv_csv
from tradebot.cli import main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "historical_data.csv"


@pytest.fixture(scope="module")
def hourly_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "hourly.csv"
    write_ohlcv_csv(synthetic_ohlcv(3000, seed=11, freq="1h"), path)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_has_the_promised_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "backtest",
        "--data",
        str(SAMPLE),
        "--short-window",
        "10",
        "--long-window",
        "30",
        "--stop-loss-pct",
        "2",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    for key in (
        "total_return_pct",
        "n_trades",
        "win_rate_pct",
        "max_drawdown_pct",
        "sharpe",
        "equity_final",
        "buy_hold_return_pct",
    ):
        assert key in result["stats"]
    assert result["stats"]["n_trades"] == len(result["trades"]) > 0
    for trade in result["trades"]:
        assert set(trade) >= {
            "entry_time",
            "exit_time",
            "side",
            "qty",
            "entry_price",
            "exit_price",
            "pnl",
            "exit_reason",
        }
        assert trade["entry_time"] <= trade["exit_time"]
    assert {t["exit_reason"] for t in result["trades"]} <= {"exit_cross", "stop_loss", "end_of_data"}
    # Equity is consistent with the trades: initial cash plus every trade's P&L.
    assert result["stats"]["equity_final"] == pytest.approx(10_000 + sum(t["pnl"] for t in result["trades"]))


def test_reference_engine_gives_the_same_json(capsys: pytest.CaptureFixture[str], hourly_csv: Path) -> None:
    args = [
        "backtest",
        "--data",
        str(hourly_csv),
        "--short-window",
        "5",
        "--long-window",
        "21",
        "--ma",
        "ema",
        "--trailing-stop-pct",
        "1.5",
        "--allow-short",
        "--fill",
        "next-open",
        "--slippage-bps",
        "2",
        "--json",
    ]
    _, fast, _ = run_cli(capsys, *args)
    _, reference, _ = run_cli(capsys, *args, "--engine", "reference")
    assert json.loads(fast) == json.loads(reference)


def test_table_plots_and_result_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result_file = tmp_path / "termination-log"
    code, out, _ = run_cli(
        capsys,
        "backtest",
        "--data",
        str(SAMPLE),
        "--short-window",
        "10",
        "--long-window",
        "30",
        "--plot",
        str(tmp_path / "plots"),
        "--result-file",
        str(result_file),
    )
    assert code == 0
    assert "Sharpe" in out or "sharpe" in out.lower()
    for name in ("price_trades.png", "equity_drawdown.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads(result_file.read_text())
    assert stored["trades"] == []
    assert len(result_file.read_bytes()) < 4096  # fits a Kubernetes termination message
    assert stored["stats"]["n_trades"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--short-window", "30", "--long-window", "10"],
            "--short-window (30) must be less than --long-window (10)",
        ),
        (["--short-window", "5", "--long-window", "10", "--stop-loss-pct", "150"], "--stop-loss-pct"),
        (["--short-window", "5", "--long-window", "10", "--sizing", "lots:3"], "--sizing"),
        (["--short-window", "5", "--long-window", "10", "--commission-pct", "-1"], "--commission-pct"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "backtest", "--data", str(SAMPLE), *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_bad_file_names_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01,1,2,0.5,1.5,10\n2024-01-02,1,2,0.5,abc,10\n"
    )
    code, _, err = run_cli(
        capsys, "backtest", "--data", str(bad), "--short-window", "2", "--long-window", "3"
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "line 3" in err
    code, _, err = run_cli(
        capsys,
        "backtest",
        "--data",
        str(tmp_path / "missing.csv"),
        "--short-window",
        "2",
        "--long-window",
        "3",
    )
    assert code == 2
    assert "missing.csv" in err


def test_sweep_ranks_and_agrees_with_single_runs(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path, tmp_path: Path
) -> None:
    code, out, err = run_cli(
        capsys,
        "sweep",
        "--data",
        str(hourly_csv),
        "--short-window",
        "3:9:3",
        "--long-window",
        "10,20,30",
        "--stop-loss-pct",
        "1,3",
        "--metric",
        "total_return_pct",
        "--json",
        "--plot",
        str(tmp_path),
    )
    assert code == 0, err
    result = json.loads(out)
    rows = result["results"]
    assert result["combinations"] == len(rows) == 3 * 3 * 2
    returns = [row["total_return_pct"] for row in rows]
    assert returns == sorted(returns, reverse=True)
    best = rows[0]
    code, single, _ = run_cli(
        capsys,
        "backtest",
        "--data",
        str(hourly_csv),
        "--short-window",
        str(best["short_window"]),
        "--long-window",
        str(best["long_window"]),
        "--stop-loss-pct",
        str(best["stop_loss_pct"]),
        "--json",
    )
    stats = json.loads(single)["stats"]
    assert best["total_return_pct"] == pytest.approx(stats["total_return_pct"], rel=1e-9)
    assert best["n_trades"] == stats["n_trades"]
    assert best["sharpe"] == pytest.approx(stats["sharpe"], rel=1e-6)
    assert best["max_drawdown_pct"] == pytest.approx(stats["max_drawdown_pct"], rel=1e-9)
    assert (tmp_path / "sweep_total_return_pct.png").stat().st_size > 1000


def test_sweep_skips_invalid_combinations_and_rejects_bad_ranges(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path
) -> None:
    code, out, _ = run_cli(
        capsys,
        "sweep",
        "--data",
        str(hourly_csv),
        "--short-window",
        "5:25:10",
        "--long-window",
        "10:20:10",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["invalid"] == 3  # (15,10) (25,10) (25,20)
    assert result["combinations"] == 3
    code, _, err = run_cli(
        capsys, "sweep", "--data", str(hourly_csv), "--short-window", "9:1:2", "--long-window", "20"
    )
    assert code == 2
    assert "--short-window" in err


def test_walk_forward(capsys: pytest.CaptureFixture[str], hourly_csv: Path) -> None:
    code, out, err = run_cli(
        capsys,
        "sweep",
        "--data",
        str(hourly_csv),
        "--short-window",
        "3,5,8",
        "--long-window",
        "20,40",
        "--walk-forward",
        "3",
        "--train-ratio",
        "2",
        "--json",
    )
    assert code == 0, err
    folds = json.loads(out)["folds"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    for fold in folds:
        # Each test window starts after its training window ends: nothing leaks backwards.
        assert fold["train_end"] < fold["test_start"] <= fold["test_end"]
        assert "in_sample_sharpe" in fold
        assert "out_of_sample_sharpe" in fold


def test_parquet_gives_the_csv_result_and_profile_names_the_phases(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path, tmp_path: Path
) -> None:
    from tradebot.backtest.data import load_ohlcv, write_parquet

    parquet = write_parquet(load_ohlcv(hourly_csv), tmp_path / "hourly.parquet")
    flags = ["--short-window", "5", "--long-window", "20", "--stop-loss-pct", "1", "--json"]
    code, from_csv, _ = run_cli(capsys, "backtest", "--data", str(hourly_csv), *flags)
    assert code == 0
    code, from_parquet, err = run_cli(capsys, "backtest", "--data", str(parquet), *flags, "--profile")
    assert code == 0
    assert json.loads(from_parquet) == json.loads(from_csv)
    assert json.loads(from_csv)["stats"]["n_trades"] > 0
    (line,) = err.strip().splitlines()
    for phase in ("read", "validate", "run", "write"):
        assert f" {phase} " in line
    assert "whole process" in line


def test_tick_file_is_backtested_one_bar_per_tick(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tradebot.backtest.data import synthetic_ohlcv

    closes = synthetic_ohlcv(2_000, seed=3, freq="1s")["close"]
    ticks = tmp_path / "ticks.csv"
    stamps = pd.DatetimeIndex(closes.index).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ticks.write_text(
        "timestamp,price,size\n" + "".join(f"{t},{p!r},1\n" for t, p in zip(stamps, closes, strict=True))
    )
    bars = tmp_path / "bars.csv"
    bars.write_text(  # the same prices as bars with open = high = low = close
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"{t},{p!r},{p!r},{p!r},{p!r},1\n" for t, p in zip(stamps, closes, strict=True))
    )
    flags = ["--short-window", "3", "--long-window", "12", "--json"]
    code, from_ticks, err = run_cli(capsys, "backtest", "--data", str(ticks), *flags)
    assert code == 0, err
    result = json.loads(from_ticks)
    assert result["stats"]["bars"] == 2_000
    assert result["stats"]["n_trades"] > 0
    # By default ticks trade as ticks; the same prices as 1-second bars need tick named to match.
    assert (result["params"]["timeframe"], result["params"]["timeframe_why"]) == (
        "tick",
        "auto: the data is ticks",
    )
    _, from_bars, _ = run_cli(capsys, "backtest", "--data", str(bars), *flags, "--timeframe", "tick")
    result["params"]["timeframe_why"] = None
    assert json.loads(from_bars) == result


def test_fill_choices_are_the_engines_and_a_bad_flag_is_named_before_a_bad_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tradebot.backtest.cliargs import FILL_CHOICES
    from tradebot.backtest.engine import FILL_MODELS

    assert FILL_CHOICES == FILL_MODELS
    missing = str(tmp_path / "missing.csv")
    code, _, err = run_cli(capsys, "backtest", "--data", missing, "--short-window", "9", "--long-window", "3")
    assert code == 2
    assert "--short-window (9) must be less than --long-window (3)" in err
    code, _, err = run_cli(capsys, "backtest", "--data", missing, "--short-window", "2", "--long-window", "3")
    assert code == 2
    assert "missing.csv" in err


WALK_FORWARD = ("--short-window", "3,5,8", "--long-window", "20,40", "--train-ratio", "2")


def test_walk_forward_plot_is_written_and_named(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path, tmp_path: Path
) -> None:
    # `--walk-forward N --plot DIR` used to write nothing and say nothing.
    args = ("sweep", "--data", str(hourly_csv), *WALK_FORWARD, "--walk-forward", "3", "--plot", str(tmp_path))
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    plot = tmp_path / "walk_forward_sharpe.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {plot}" in out


def test_walk_forward_with_windows_too_short_for_a_signal_is_refused_with_a_fold_count_that_works(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path
) -> None:
    # `--walk-forward 200` used to fill the table with nan: test windows shorter than the long average.
    args = ("sweep", "--data", str(hourly_csv), *WALK_FORWARD, "--json", "--walk-forward")
    code, out, err = run_cli(capsys, *args, "200")
    assert code == 2
    assert out == ""
    assert "no longer than the longest long window (40)" in err
    most = int(err.split("use at most ")[1].split(" folds")[0])
    code, out, err = run_cli(capsys, *args, str(most))
    assert code == 0, err
    folds = json.loads(out)["folds"]
    assert len(folds) == most
    assert all(fold["out_of_sample_trades"] is not None for fold in folds)


def test_a_long_window_longer_than_the_data_is_warned_about(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path
) -> None:
    # `--long-window 5000` on fewer bars used to return 0 trades without a word.
    bars = len(pd.read_csv(hourly_csv))
    backtest = ("backtest", "--data", str(hourly_csv), "--short-window", "5", "--json", "--long-window")
    code, out, err = run_cli(capsys, *backtest, str(bars + 10))
    assert code == 0
    assert json.loads(out)["stats"]["n_trades"] == 0
    assert f"needs {bars + 10} 1h bars before its first value and the data has {bars}" in err
    code, _, err = run_cli(capsys, *backtest, "20")
    assert "warning" not in err


@pytest.mark.parametrize("command", ["backtest", "sweep"])
def test_help_says_what_every_fill_mode_does(capsys: pytest.CaptureFixture[str], command: str) -> None:
    """Issue 16.10: `--help` describes each of the engine's fill modes: when it fills, at what price, and
    how stops meet the bar's high and low (a mode added to the engine without a text fails here)."""
    from tradebot.backtest.cliargs import FILL_HELP, FILL_HELP_COMMON
    from tradebot.backtest.engine import FillModel

    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    # argparse wraps the text (also after a hyphen): compare without whitespace.
    shown = "".join(capsys.readouterr().out.split())
    modes = get_args(FillModel)
    assert set(FILL_HELP) == set(modes)
    for mode in modes:
        assert "".join(f"{mode}: {FILL_HELP[mode]}".split()) in shown, mode
    assert "".join(FILL_HELP_COMMON.split()) in shown
    assert "low reaches it" in FILL_HELP["close"]
    assert "next bar's open" in FILL_HELP["next-open"]
    assert "(a gap) fills at its open" in FILL_HELP_COMMON


def test_result_tables_show_counts_as_integers_and_every_column_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16.12: a sweep printed `47.000` trades and `10.0` windows, and rich cut every column of a
    wide table to `61…` in an 80-column pipe."""
    data = ["--data", str(SAMPLE)]
    grid = ["--short-window", "5:15:5", "--long-window", "20,40"]
    for args in (
        ["backtest", *data, "--short-window", "10", "--long-window", "30"],
        ["sweep", *data, *grid],
        ["sweep", *data, *grid, "--walk-forward", "3"],
    ):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        assert "…" not in out, out  # no truncated cell or header
        assert ".000" not in out
        rows = [line for line in out.splitlines() if line.startswith("│")]
        assert rows, out
        # Aligned: every row of a table as wide as its borders.
        assert len({len(line) for line in rows}) <= 2  # the stats table and the trades table differ
    header = next(line for line in out.splitlines() if "out_of_sample_trades" in line)
    assert "short_window" in header
    fold = next(line for line in out.splitlines() if line.startswith("│    1 │"))
    cells = [cell.strip() for cell in fold.strip("│").split("│")]
    assert cells[5:7] in (["10", "40"], ["10", "20"], ["5", "20"], ["5", "40"], ["15", "20"], ["15", "40"])
    assert cells[-1].isdigit()  # out-of-sample trades: an integer


def test_the_program_writes_its_whole_result_through_a_pipe_and_exits_with_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tradebot backtest` run as a program ends the process as soon as its output is flushed (no
    teardown of its arrays): every byte of a large result still arrives through a pipe, equal to the
    in-process call's, and an error still exits 2 with its message."""
    import subprocess
    import sys

    data = write_ohlcv_csv(synthetic_ohlcv(50_000, seed=3, freq="1min"), tmp_path / "bars.csv")
    program = [
        sys.executable,
        "-c",
        "import sys; from tradebot.cli import main; sys.exit(main())",
        "backtest",
    ]
    flags = ["--short-window", "5", "--long-window", "12", "--timeframe", "tick", "--json"]
    done = subprocess.run(
        [*program, "--data", str(data), *flags], capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    assert result["stats"]["n_trades"] == len(result["trades"]) > 1_000
    code, out, _ = run_cli(capsys, "backtest", "--data", str(data), *flags)
    assert code == 0
    assert json.loads(out) == result
    missing = str(tmp_path / "missing.csv")
    failed = subprocess.run(
        [*program, "--data", missing, *flags], capture_output=True, timeout=300, check=False
    )
    assert failed.returncode == 2
    assert missing.encode() in failed.stderr
