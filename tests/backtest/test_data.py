"""OHLCV loading, validation, writing and synthetic data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.backtest.data import DataError, load_ohlcv, synthetic_ohlcv, write_ohlcv_csv

REPO = Path(__file__).resolve().parents[2]
HISTORICAL = REPO / "data" / "historical_data.csv"


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_canonical(df: pd.DataFrame) -> None:
    assert isinstance(df.index, pd.DatetimeIndex)
    assert df.index.name == "ts"
    assert str(df.index.tz) == "UTC"
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in df.dtypes)
    assert df.index.is_monotonic_increasing
    assert df.index.is_unique


# ----------------------------------------------------------------------------------------------- formats


def test_generic_iso_dates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Date,Open,High,Low,Close,Volume\n2024-01-02,10,11,9,10.5,100\n2024-01-03,10.5,12,10,11,200\n",
    )
    df = load_ohlcv(path)
    assert_canonical(df)
    assert list(df.index) == [pd.Timestamp("2024-01-02", tz="UTC"), pd.Timestamp("2024-01-03", tz="UTC")]
    assert df["close"].tolist() == [10.5, 11.0]
    assert df["volume"].tolist() == [100.0, 200.0]


def test_generic_datetimes_with_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "datetime,open,high,low,close\n2024-01-02T09:30:00-05:00,1,2,1,2\n2024-01-02T15:00:00Z,2,3,2,3\n",
    )
    df = load_ohlcv(path)
    assert_canonical(df)
    assert df.index[0] == pd.Timestamp("2024-01-02T14:30:00", tz="UTC")
    assert df.index[1] == pd.Timestamp("2024-01-02T15:00:00", tz="UTC")
    assert (df["volume"] == 0.0).all()  # absent volume


def test_naive_datetimes_are_utc(tmp_path: Path) -> None:
    path = write(
        tmp_path, "Time,Open,High,Low,Close\n2024-01-02 15:00:00,2,3,2,3\n2024-01-02 15:00:01.5,2,3,2,3\n"
    )
    df = load_ohlcv(path)
    assert_canonical(df)
    assert list(df.index) == [
        pd.Timestamp("2024-01-02T15:00:00", tz="UTC"),
        pd.Timestamp("2024-01-02T15:00:01.5", tz="UTC"),
    ]


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (["1704067200", "1704067260"], "2024-01-01T00:00:00"),  # epoch seconds
        (["1704067200000", "1704067260000"], "2024-01-01T00:00:00"),  # epoch milliseconds
    ],
)
def test_generic_epoch_numbers(tmp_path: Path, stamps: list[str], expected: str) -> None:
    rows = "".join(f"{s},1,2,0.5,1.5,7\n" for s in stamps)
    df = load_ohlcv(write(tmp_path, "timestamp,open,high,low,close,volume\n" + rows))
    assert_canonical(df)
    assert df.index[0] == pd.Timestamp(expected, tz="UTC")
    assert df.index[1] - df.index[0] == pd.Timedelta(minutes=1)


def test_yahoo_export_ignores_adj_close(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2023-01-03,130.28,130.90,124.17,125.07,123.63,112117500\n"
        "2023-01-04,126.89,128.66,125.08,126.36,124.91,89113600\n",
    )
    df = load_ohlcv(path)
    assert_canonical(df)
    assert df["close"].tolist() == [125.07, 126.36]
    assert df["volume"].tolist() == [112117500.0, 89113600.0]


BINANCE_ROWS = (
    "1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68108,1704070799999,5.4e7,47134,682.9,2.9e7,0\n"
    "1704070800000,42475.23,42775.00,42431.65,42613.56,1196.37856,1704074399999,5.1e7,50396,622.0,2.6e7,0\n"
)


def test_binance_klines_without_header(tmp_path: Path) -> None:
    df = load_ohlcv(write(tmp_path, BINANCE_ROWS))
    assert_canonical(df)
    assert df.index[0] == pd.Timestamp("2024-01-01T00:00:00", tz="UTC")
    assert df.index[1] == pd.Timestamp("2024-01-01T01:00:00", tz="UTC")
    assert df["open"].tolist() == [42283.58, 42475.23]
    assert df["volume"].tolist() == [1271.68108, 1196.37856]


def test_binance_klines_with_header(tmp_path: Path) -> None:
    header = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,trades,taker_base,taker_quote,ignore\n"
    )
    df = load_ohlcv(write(tmp_path, header + BINANCE_ROWS))
    assert df.equals(load_ohlcv(write(tmp_path, BINANCE_ROWS, "noheader.csv")))


@pytest.mark.parametrize("time_name", ["timestamp", "date", "ts"])
def test_seed_price_only(tmp_path: Path, time_name: str) -> None:
    df = load_ohlcv(write(tmp_path, f"{time_name},price\n2024-01-01,10\n2024-01-02,10.5\n2024-01-03,9.75\n"))
    assert_canonical(df)
    for col in ("open", "high", "low", "close"):
        assert df[col].tolist() == [10.0, 10.5, 9.75]
    assert (df["volume"] == 0.0).all()


def test_backtesting_goog_layout_with_unnamed_first_column(tmp_path: Path) -> None:
    path = write(tmp_path, ",Open,High,Low,Close,Volume\n2004-08-19,100,104.06,95.96,100.34,22351900\n")
    df = load_ohlcv(path)
    assert_canonical(df)
    assert df.index[0] == pd.Timestamp("2004-08-19", tz="UTC")
    assert df["high"].iloc[0] == 104.06


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path, "date,open,high,low,close\n2024-01-01,1,2,1,2\n\n2024-01-02,1,2,1,2\n2024-01-03,1,2,1,x\n"
    )
    with pytest.raises(DataError, match=r"line 5: close is not a number \('x'\)"):
        load_ohlcv(path)


def test_a_failed_check_after_blank_lines_names_the_file_line(tmp_path: Path) -> None:
    # Every cell parses, so the fast reader (which skips blank lines) reads it; the check that fails
    # must still name the line in the file, not the row.
    path = write(
        tmp_path,
        "\ndate,open,high,low,close\n2024-01-01,1,2,1,2\n\n\n2024-01-02,1,2,1,2\n2024-01-03,1,1.5,1,2\n",
    )
    with pytest.raises(DataError, match=r"line 7: high 1.5 is below max\(open, close\) 2.0"):
        load_ohlcv(path)
    path.write_text(path.read_text().lstrip("\n"))
    with pytest.raises(DataError, match=r"line 6: high 1.5 is below max\(open, close\) 2.0"):
        load_ohlcv(path)
    path.write_text("\n\nopen,high\n1,2\n")
    with pytest.raises(DataError, match=r"data.csv line 3: missing time column"):
        load_ohlcv(path)


def test_historical_goog_file_loads() -> None:
    df = load_ohlcv(HISTORICAL)
    assert_canonical(df)
    assert len(df) == 2148
    assert df.index[0] == pd.Timestamp("2004-08-19", tz="UTC")
    assert df.index[-1] == pd.Timestamp("2013-03-01", tz="UTC")
    assert (df["volume"] > 0).all()


def test_historical_matches_backtesting_sample() -> None:
    spec = importlib.util.find_spec("backtesting")  # locate without importing (bokeh is slow)
    if spec is None or spec.origin is None:
        pytest.skip("backtesting.py is not installed")
    sample = Path(spec.origin).parent / "test" / "GOOG.csv"
    pd.testing.assert_frame_equal(load_ohlcv(sample), load_ohlcv(HISTORICAL))


# -------------------------------------------------------------------------------------------- validation

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD = ["2024-01-01,10,11,9,10,1", "2024-01-02,10,11,9,10,1", "2024-01-03,10,11,9,10,1"]


def with_row(line: int, row: str) -> str:
    """The good file with file line ``line`` (header is line 1) replaced by ``row``."""
    rows = list(GOOD)
    rows[line - 2] = row
    return HEADER + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("line", "row", "pattern"),
    [
        (3, "2024-01-02,10,11,9,abc,1", r"line 3: close is not a number \('abc'\)"),
        (4, "2024-01-03,10,11,9,,1", r"line 4: close is empty"),
        (2, "2024-01-01,NaN,11,9,10,1", r"line 2: open is empty"),
        (3, "2024-01-02,10,11,-9,10,1", r"line 3: low must be > 0"),
        (3, "2024-01-02,0,11,9,10,1", r"line 3: open must be > 0"),
        (4, "2024-01-03,10,9.5,9,10,1", r"line 4: high 9.5 is below max\(open, close\) 10.0"),
        (2, "2024-01-01,10,11,10.5,10.2,1", r"line 2: low 10.5 is above min\(open, close\) 10.0"),
        (3, "2024-01-02,10,11,9,10,-5", r"line 3: volume is invalid"),
        (3, "2024-01-02,10,11,9,10,lots", r"line 3: volume is not a number \('lots'\)"),
        (3, "not-a-date,10,11,9,10,1", r"line 3: timestamp is not a valid timestamp \('not-a-date'\)"),
        (
            4,
            "2024-01-02,10,11,9,10,1",
            r"line 4: duplicate timestamp 2024-01-02T00:00:00\+00:00 \(also on line 3\)",
        ),
        (3, "2023-12-31,10,11,9,10,1", r"line 3: timestamps not in ascending order"),
        (4, "2024-01-01,10,11,9,10,1", r"line 4: duplicate timestamp .* \(also on line 2\)"),
    ],
)
def test_validation_names_file_line_and_field(tmp_path: Path, line: int, row: str, pattern: str) -> None:
    path = write(tmp_path, with_row(line, row))
    with pytest.raises(DataError, match=pattern) as info:
        load_ohlcv(path)
    assert str(info.value).startswith(f"{path} line {line}: ")
    assert info.value.line == line


def test_missing_column_is_named_with_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path, "date,open,high,close\n2024-01-01,1,2,1\n")
    with pytest.raises(
        DataError, match=r"missing column 'low'; columns found: 'date', 'open', 'high', 'close'"
    ):
        load_ohlcv(path)


def test_missing_time_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.csv line 1: missing time column"):
        load_ohlcv(write(tmp_path, "open,high,low,close\n1,2,1,2\n"))


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataError, match=r"data.csv: file is empty"):
        load_ohlcv(write(tmp_path, text))


def test_header_only(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data rows"):
        load_ohlcv(write(tmp_path, HEADER))


def test_headerless_file_that_is_not_binance(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no header row"):
        load_ohlcv(write(tmp_path, "1704067200,1,2,1,2\n"))


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv"):
        load_ohlcv(tmp_path / "nope.csv")


def test_error_points_at_first_offender_in_a_large_file(tmp_path: Path) -> None:
    df = synthetic_ohlcv(50_000, seed=3)
    path = write_ohlcv_csv(df, tmp_path / "big.csv")
    lines = path.read_text().splitlines()
    bad_row = 31_337
    fields = lines[bad_row].split(",")
    fields[2] = str(float(fields[1]) / 2)  # high below open
    lines[bad_row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"line {bad_row + 1}: high"):
        load_ohlcv(path)


# ------------------------------------------------------------------------------------------ round trips


def test_round_trip_synthetic_is_exact(tmp_path: Path) -> None:
    df = synthetic_ohlcv(2_000, seed=11, freq="1s")
    back = load_ohlcv(write_ohlcv_csv(df, tmp_path / "out" / "rt.csv"))
    pd.testing.assert_frame_equal(df, back, check_exact=True, check_freq=False)


def test_round_trip_sub_second_stamps(tmp_path: Path) -> None:
    df = synthetic_ohlcv(100, seed=2, freq="250ms")
    back = load_ohlcv(write_ohlcv_csv(df, tmp_path / "ms.csv"))
    pd.testing.assert_frame_equal(df, back, check_exact=True, check_freq=False)


@settings(max_examples=25, deadline=None)
@given(
    prices=st.lists(
        st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=30,
    ),
    step_s=st.integers(min_value=1, max_value=10 * 86_400),
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, prices: list[float], step_s: int
) -> None:
    close = np.asarray(prices)
    index = pd.date_range(
        "2021-03-04", periods=len(close), freq=pd.Timedelta(seconds=step_s), tz="UTC", name="ts"
    )
    df = pd.DataFrame(
        {"open": close, "high": close * 1.5, "low": close / 2, "close": close, "volume": close * 3},
        index=index,
    )
    path = write_ohlcv_csv(df, tmp_path_factory.mktemp("rt") / "p.csv")
    pd.testing.assert_frame_equal(df, load_ohlcv(path), check_exact=True, check_freq=False)


def test_million_rows_load_exactly(tmp_path: Path) -> None:
    n = 1_000_000
    rng = np.random.default_rng(0)
    # Integer prices keep the fixture quick to write; the loader still converts every column to float64.
    close = 100 + np.cumsum(rng.integers(-5, 6, n)) % 5_000 + 100
    stamps = 1_600_000_000 + 60 * np.arange(n)
    frame = pd.DataFrame(
        {"timestamp": stamps, "open": close, "high": close + 50, "low": close - 50, "close": close}
    )
    path = tmp_path / "million.csv"
    frame.to_csv(path, index=False)
    df = load_ohlcv(path)
    assert len(df) == n
    assert np.array_equal(df["close"].to_numpy(), close.astype(np.float64))
    assert df.index[-1] == pd.Timestamp(int(stamps[-1]), unit="s", tz="UTC")


def test_fast_and_careful_readers_agree(tmp_path: Path) -> None:
    """A file whose header is not on line 1 goes through the careful reader only; with the blank line
    removed the fast one reads it: both give the same frame, to the last bit."""
    df = synthetic_ohlcv(5_000, seed=4, freq="1s")
    fast = write_ohlcv_csv(df, tmp_path / "fast.csv")
    careful = tmp_path / "careful.csv"
    careful.write_text("\n" + fast.read_text())
    pd.testing.assert_frame_equal(load_ohlcv(fast), load_ohlcv(careful), check_exact=True)
    pd.testing.assert_frame_equal(load_ohlcv(fast), df, check_exact=True, check_freq=False)


# ------------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_per_seed() -> None:
    a = synthetic_ohlcv(5_000, seed=7)
    b = synthetic_ohlcv(5_000, seed=7)
    c = synthetic_ohlcv(5_000, seed=8)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert not np.array_equal(a["close"].to_numpy(), c["close"].to_numpy())


@pytest.mark.parametrize("regimes", [True, False])
@pytest.mark.parametrize("freq", ["1min", "1h", "1D", "B"])
def test_synthetic_is_valid_ohlcv(freq: str, regimes: bool) -> None:
    df = synthetic_ohlcv(3_000, seed=5, freq=freq, regime_switching=regimes, start_price=50.0)
    assert_canonical(df)
    assert len(df) == 3_000
    o, h, lo, c, v = (df[col].to_numpy() for col in ("open", "high", "low", "close", "volume"))
    assert np.isfinite(df.to_numpy()).all()
    assert (lo > 0).all()
    assert (h >= np.maximum(o, c)).all()
    assert (lo <= np.minimum(o, c)).all()
    assert (v > 0).all()
    # Each open is a small gap away from the previous close.
    assert np.abs(o[1:] / c[:-1] - 1).max() < 0.05


def test_synthetic_volatility_matches_annualised_input() -> None:
    df = synthetic_ohlcv(200_000, seed=1, freq="1h", volatility=0.3, regime_switching=False)
    log_ret = np.diff(np.log(df["close"].to_numpy()))
    realised = log_ret.std() * np.sqrt(365 * 24)
    assert realised == pytest.approx(0.3, rel=0.03)


def test_synthetic_passes_load_validation(tmp_path: Path) -> None:
    df = synthetic_ohlcv(10_000, seed=9, freq="5min")
    pd.testing.assert_frame_equal(df, load_ohlcv(write_ohlcv_csv(df, tmp_path / "s.csv")), check_freq=False)


def test_synthetic_million_bars() -> None:
    df = synthetic_ohlcv(1_000_000, seed=0)
    assert len(df) == 1_000_000
    assert df["close"].dtype == np.float64


def test_synthetic_zero_bars_and_bad_args() -> None:
    assert len(synthetic_ohlcv(0)) == 0
    with pytest.raises(ValueError, match="n_bars"):
        synthetic_ohlcv(-1)
