"""`tradebot sweep --shard-count N --shard-index I`: N slices of the grid, each a pod of the operator's Indexed
Job, merged (tradebot.core.shards) into exactly what one unsharded `tradebot sweep` prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradebot.backtest.data import synthetic_ohlcv, write_ohlcv_csv
from tradebot.backtest.sweep import RANK_METRICS
from tradebot.cli import main
from tradebot.core import shards

# short 3..12 x long 6..30 has invalid combinations (short >= long) and n_trades has ties: both must merge
# in the unsharded order.
# A row of every sweepable parameter and every metric, each at its longest printed form.
WIDEST_ROW = {
    shards.COMBINATION: 1999,
    "short_window": 99_999,
    "long_window": 100_000,
    "stop_loss_pct": 99.1234567891,
    "take_profit_pct": 9999.1234567891,
    "trailing_stop_pct": 99.1234567891,
    **dict.fromkeys([*RANK_METRICS, "exposure_pct", "equity_final"], -1.2345678901234567e-100),
}
GRID = ("--short-window", "3:12:3", "--long-window", "6:30:6", "--stop-loss-pct", "1.5,3")


@pytest.fixture(scope="module")
def hourly_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "hourly.csv"
    write_ohlcv_csv(synthetic_ohlcv(1500, seed=5, freq="1h"), path)
    return path


def _sweep(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["sweep", *args, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("metric", ["sharpe", "n_trades"])
def test_shards_merged_equal_the_unsharded_sweep(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path, tmp_path: Path, metric: str
) -> None:
    whole_csv = tmp_path / "whole.csv"
    _sweep(capsys, "--data", str(hourly_csv), *GRID, "--metric", metric, "--csv", str(whole_csv))
    whole = json.loads(_sweep(capsys, "--data", str(hourly_csv), *GRID, "--metric", metric, "--json"))
    count = 4
    tables, reports = [], []
    for index in range(count):
        result_file = tmp_path / f"shard-{index}.json"
        out = _sweep(
            capsys,
            "--data",
            str(hourly_csv),
            *GRID,
            "--metric",
            metric,
            "--shard-count",
            str(count),
            "--shard-index",
            str(index),
            "--top",
            str(shards.MAX_TOP),
            "--result-file",
            str(result_file),
            "--jsonl",
        )
        tables.append(shards.parse_table_lines(out))
        reports.append(shards.decode_shard_result(result_file.read_text()))
    # Every valid combination in exactly one shard, k in shard k % count.
    for index, rows in enumerate(tables):
        assert rows
        assert all(row[shards.COMBINATION] % count == index for row in rows)
    assert sum(report.combinations for report in reports) == whole["combinations"] == 32
    assert {report.invalid for report in reports} == {whole["invalid"]} == {8}

    merged = shards.merge_rows(tables, metric)
    assert shards.table_csv(merged) == whole_csv.read_text()  # byte for byte what `--csv` writes
    top = shards.merge_rows((report.top for report in reports), metric)[: shards.MAX_TOP]
    assert top == merged[: shards.MAX_TOP]
    unsharded_top = [{key: value for key, value in row.items() if key != shards.COMBINATION} for row in top]
    # --json rounds to 10 significant digits; the CSV above is exact.
    assert unsharded_top == [pytest.approx(row, rel=1e-9) for row in whole["results"][: shards.MAX_TOP]]


def test_the_shard_index_defaults_to_the_indexed_jobs_completion_index(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    out = _sweep(capsys, "--data", str(hourly_csv), *GRID, "--shard-count", "3", "--jsonl")
    rows = shards.parse_table_lines(out)
    assert rows
    assert {row[shards.COMBINATION] % 3 for row in rows} == {2}
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    assert main(["sweep", "--data", str(hourly_csv), *GRID, "--shard-count", "3"]) == 2
    assert "JOB_COMPLETION_INDEX" in capsys.readouterr().err
    assert main(["sweep", "--data", str(hourly_csv), *GRID, "--shard-count", "3", "--shard-index", "3"]) == 2
    assert "0..2" in capsys.readouterr().err


def test_an_empty_shard_reports_no_rows(
    capsys: pytest.CaptureFixture[str], hourly_csv: Path, tmp_path: Path
) -> None:
    result_file = tmp_path / "r.json"
    args = ("--short-window", "5", "--long-window", "20", "--shard-count", "2", "--shard-index", "1")
    assert (
        _sweep(capsys, "--data", str(hourly_csv), *args, "--result-file", str(result_file), "--jsonl") == ""
    )
    report = shards.decode_shard_result(result_file.read_text())
    assert (report.combinations, report.top, report.shard, report.shards) == (0, [], 1, 2)


def test_the_widest_shard_report_fits_a_termination_message() -> None:
    """MAX_TOP rows of every sweepable parameter and every metric, each at its longest printed form, within
    the 4096 bytes Kubernetes keeps: nothing is dropped."""
    row = WIDEST_ROW
    report = shards.ShardResult("sharpe", 49, 50, 2000, 2000, [row] * shards.MAX_TOP)
    message = shards.encode_shard_result(report)
    assert len(message.encode()) <= shards.MAX_MESSAGE_BYTES
    assert shards.decode_shard_result(message).top == [row] * shards.MAX_TOP
    # Wider rows than that are cut to fit rather than cut mid-JSON by the kubelet.
    wide = {**row, **{f"extra_{i}": -1.2345678901234567e-100 for i in range(30)}}
    cut = shards.encode_shard_result(shards.ShardResult("sharpe", 0, 1, 10, 0, [wide] * shards.MAX_TOP))
    assert len(cut.encode()) <= shards.MAX_MESSAGE_BYTES
    assert 0 < len(shards.decode_shard_result(cut).top) < shards.MAX_TOP
