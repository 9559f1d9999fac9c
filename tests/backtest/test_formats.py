"""The data formats beyond the generic CSV: lowercase headers, Binance klines, tick files and Parquet,
each read into bars or ticks, and bad input named by line (CSV) or row (Parquet) and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tradebot.backtest.data import (
    BINANCE_COLUMNS,
    Bars,
    DataError,
    Ticks,
    load_market_data,
    load_ohlcv,
    synthetic_ohlcv,
    write_ohlcv_csv,
    write_parquet,
)


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def write_table(tmp_path: Path, columns: dict[str, pa.Array], name: str = "data.parquet") -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path)
    return path


# ------------------------------------------------------------------------------------------------- CSV


def test_lowercase_date_open_high_low_close_volume(tmp_path: Path) -> None:
    data = load_market_data(
        write(
            tmp_path,
            "date,open,high,low,close,volume\n2024-01-02,10,11,9,10.5,100\n2024-01-03,10.5,12,10,11,0\n",
        )
    )
    assert isinstance(data, Bars)
    assert data.ts.tolist() == [pd.Timestamp(d, tz="UTC").value for d in ("2024-01-02", "2024-01-03")]
    assert data.close.tolist() == [10.5, 11.0]
    assert data.volume.tolist() == [100.0, 0.0]


def kline_rows(stamps: list[int]) -> str:
    rows = []
    for i, stamp in enumerate(stamps):
        price = 42_000.0 + i
        rows.append(
            f"{stamp},{price},{price + 50},{price - 50},{price + 10},12.5,{stamp + 59_999},5e5,420,6.1,2.6e5,0"
        )
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("unit", [1, 1_000])  # milliseconds (to 2024), microseconds (spot from 2025)
@pytest.mark.parametrize("header", [False, True])
def test_binance_kline_exports(tmp_path: Path, unit: int, header: bool) -> None:
    stamps = [1735689600000 * unit + i * 60_000 * unit for i in range(3)]
    text = (",".join(BINANCE_COLUMNS) + "\n" if header else "") + kline_rows(stamps)
    data = load_market_data(write(tmp_path, text))
    assert isinstance(data, Bars)
    assert data.index()[0] == pd.Timestamp("2025-01-01T00:00:00", tz="UTC")
    assert np.diff(data.ts).tolist() == [60_000_000_000, 60_000_000_000]
    assert data.open.tolist() == [42_000.0, 42_001.0, 42_002.0]
    assert data.high.tolist() == [42_050.0, 42_051.0, 42_052.0]
    assert data.volume.tolist() == [12.5, 12.5, 12.5]


def test_binance_kline_bad_cell_names_line_and_column(tmp_path: Path) -> None:
    text = kline_rows([1735689600000 + i * 60_000 for i in range(4)]).splitlines()
    fields = text[2].split(",")
    fields[4] = "oops"
    text[2] = ",".join(fields)
    with pytest.raises(DataError, match=r"line 3: close is not a number \('oops'\)") as info:
        load_market_data(write(tmp_path, "\n".join(text) + "\n"))
    assert info.value.column == "close"


def test_tick_file_with_size(tmp_path: Path) -> None:
    data = load_market_data(
        write(
            tmp_path,
            "timestamp,price,size\n"
            "2024-01-02T15:00:00.100Z,101.5,3\n"
            "2024-01-02T15:00:00.100Z,101.6,0.5\n"  # two trades in the same millisecond
            "2024-01-02T15:00:01.250Z,101.4,7\n",
        )
    )
    assert isinstance(data, Ticks)
    assert data.price.tolist() == [101.5, 101.6, 101.4]
    assert data.size.tolist() == [3.0, 0.5, 7.0]
    assert (np.diff(data.ts) >= 0).all()
    assert data.ts[0] == pd.Timestamp("2024-01-02T15:00:00.100", tz="UTC").value


def test_tick_file_without_size_and_its_bars(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,price\n1704207600,10\n1704207601,10.5\n1704207601,9.75\n")
    data = load_market_data(path)
    assert isinstance(data, Ticks)
    assert data.size.tolist() == [0.0, 0.0, 0.0]
    bars = data.as_bars()
    for column in (bars.open, bars.high, bars.low, bars.close):
        assert column.tolist() == [10.0, 10.5, 9.75]
    frame = load_ohlcv(path)
    assert frame["close"].tolist() == [10.0, 10.5, 9.75]
    assert len(frame) == len(data)


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        (
            "2024-01-01T00:00:01Z,10,1\n2024-01-01T00:00:00Z,10,1\n",
            r"line 3: timestamps not in ascending order",
        ),
        ("2024-01-01T00:00:00Z,10,1\n2024-01-01T00:00:01Z,10,-2\n", r"line 3: size is invalid \(-2.0\)"),
        ("2024-01-01T00:00:00Z,10,1\n2024-01-01T00:00:01Z,0,2\n", r"line 3: price must be > 0"),
        (
            "2024-01-01T00:00:00Z,ten,1\n2024-01-01T00:00:01Z,10,2\n",
            r"line 2: price is not a number \('ten'\)",
        ),
        ("2024-01-01T00:00:00Z,10,1\n\n2024-01-01T00:00:01Z,10,\n", r"line 4: size is empty"),
    ],
)
def test_bad_tick_files_name_line_and_column(tmp_path: Path, rows: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_market_data(write(tmp_path, "timestamp,price,size\n" + rows))


# --------------------------------------------------------------------------------------------- Parquet


def test_parquet_written_by_pandas_reads_like_the_csv(tmp_path: Path) -> None:
    df = synthetic_ohlcv(3_000, seed=6, freq="5min")
    df.to_parquet(tmp_path / "bars.parquet")  # the index is stored as a "ts" column
    from_parquet = load_ohlcv(tmp_path / "bars.parquet")
    from_csv = load_ohlcv(write_ohlcv_csv(df, tmp_path / "bars.csv"))
    pd.testing.assert_frame_equal(from_parquet, from_csv, check_exact=True)
    pd.testing.assert_frame_equal(from_parquet, df, check_exact=True, check_freq=False)


@pytest.mark.parametrize(
    "time_column",
    [
        pa.array([1704067200, 1704067260], type=pa.int64()),  # epoch seconds
        pa.array(["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"]),  # ISO strings
        pa.array([1704067200_000, 1704067260_000], type=pa.timestamp("ms")),  # naive means UTC
        pa.array([1704067200_000_000, 1704067260_000_000], type=pa.timestamp("us", tz="Asia/Tokyo")),
    ],
)
def test_parquet_time_column_types(tmp_path: Path, time_column: pa.Array) -> None:
    price = pa.array([10.0, 10.5])
    path = write_table(
        tmp_path,
        {"Date": time_column, "Open": price, "High": price, "Low": price, "Close": price},
    )
    data = load_market_data(path)
    assert isinstance(data, Bars)
    assert data.index().tolist() == [
        pd.Timestamp("2024-01-01T00:00:00", tz="UTC"),
        pd.Timestamp("2024-01-01T00:01:00", tz="UTC"),
    ]
    assert data.volume.tolist() == [0.0, 0.0]


def test_parquet_kline_schema(tmp_path: Path) -> None:
    stamps = np.array([1735689600000 + i * 3_600_000 for i in range(3)], dtype=np.int64)
    price = np.array([100.0, 101.0, 102.0])
    columns: dict[str, pa.Array] = {
        "open_time": pa.array(stamps),
        "open": pa.array(price),
        "high": pa.array(price + 1),
        "low": pa.array(price - 1),
        "close": pa.array(price + 0.5),
        "volume": pa.array([5.0, 6.0, 7.0]),
        "close_time": pa.array(stamps + 3_599_999),
        "quote_volume": pa.array(price * 5),
        "trades": pa.array([10, 11, 12]),
        "taker_base": pa.array([1.0, 2.0, 3.0]),
        "taker_quote": pa.array([1.0, 2.0, 3.0]),
        "ignore": pa.array(["0", "0", "0"]),
    }
    data = load_market_data(write_table(tmp_path, columns))
    assert isinstance(data, Bars)
    assert data.index()[2] == pd.Timestamp("2025-01-01T02:00:00", tz="UTC")
    assert data.close.tolist() == [100.5, 101.5, 102.5]
    assert data.volume.tolist() == [5.0, 6.0, 7.0]


def test_parquet_ticks_and_round_trips(tmp_path: Path) -> None:
    start = pd.Timestamp("2024-03-01", tz="UTC").value
    ts = np.repeat(start + 250_000_000 * np.arange(500, dtype=np.int64), 2)  # trades in pairs per instant
    rng = np.random.default_rng(3)
    ticks = Ticks(ts, 100 + rng.random(1_000), rng.integers(1, 9, 1_000).astype(np.float64))
    back = load_market_data(write_parquet(ticks, tmp_path / "ticks.parquet"))
    assert isinstance(back, Ticks)
    for name in ("ts", "price", "size"):
        assert np.array_equal(getattr(back, name), getattr(ticks, name))
    bars = synthetic_ohlcv(500, seed=1)
    pd.testing.assert_frame_equal(
        load_ohlcv(write_parquet(bars, tmp_path / "bars.parquet")), bars, check_exact=True, check_freq=False
    )


def test_parquet_of_many_row_groups_reads_every_row_in_order(tmp_path: Path) -> None:
    """Read one row group at a time into arrays allocated once: every row lands in its place whatever the
    row groups' and Arrow's chunk sizes, integer prices become floats, and an empty cell in a later row
    group is still named by its row."""
    n = 10_000
    stamps = 1704067200_000_000 + 60_000_000 * np.arange(n, dtype=np.int64)
    price = np.arange(n, dtype=np.int64) + 100
    table = pa.table(
        {
            "timestamp": pa.array(stamps, type=pa.timestamp("us")),
            "open": pa.array(price),
            "high": pa.array(price + 1),
            "low": pa.array(price.astype(np.float32)),
            "close": pa.array(price.astype(np.float64)),
        }
    )
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=777)
    assert pq.ParquetFile(path).num_row_groups == 13
    data = load_market_data(path)
    assert isinstance(data, Bars)
    assert np.array_equal(data.ts, stamps * 1_000)
    assert data.open.dtype == np.float64
    assert np.array_equal(data.open, price.astype(np.float64))
    assert np.array_equal(data.high, price + 1.0)
    assert np.array_equal(data.low, data.close)
    assert data.volume.tolist() == [0.0] * n

    with_gap = table.set_column(4, "close", pa.array([*price[:9_000], None, *price[9_001:]], pa.float64()))
    pq.write_table(with_gap, path, row_group_size=777)
    with pytest.raises(DataError, match=r"row 9001: close is empty") as info:
        load_market_data(path)
    assert (info.value.row, info.value.column) == (9_001, "close")


def parquet_bars(tmp_path: Path, **overrides: list[object]) -> Path:
    columns: dict[str, list[object]] = {
        "timestamp": [1704067200 + 60 * i for i in range(4)],
        "open": [10.0, 10.0, 10.0, 10.0],
        "high": [11.0, 11.0, 11.0, 11.0],
        "low": [9.0, 9.0, 9.0, 9.0],
        "close": [10.0, 10.0, 10.0, 10.0],
        "volume": [1.0, 1.0, 1.0, 1.0],
    }
    columns.update(overrides)
    return write_table(tmp_path, {name: pa.array(values) for name, values in columns.items()})


@pytest.mark.parametrize(
    ("overrides", "pattern", "row", "column"),
    [
        ({"high": [11.0, 11.0, 9.5, 11.0]}, r"row 3: high 9.5 is below max\(open, close\) 10.0", 3, "high"),
        ({"close": [10.0, None, 10.0, 10.0]}, r"row 2: close is empty", 2, "close"),
        ({"volume": [1.0, 1.0, 1.0, -1.0]}, r"row 4: volume is invalid", 4, "volume"),
        ({"close": ["10", "10", "x", "10"]}, r"row 3: close is not a number \('x'\)", 3, "close"),
        (
            {"timestamp": [1704067200, 1704067260, 1704067260, 1704067320]},
            r"row 3: duplicate timestamp 2024-01-01T00:01:00\+00:00 \(also on row 2\)",
            3,
            "timestamp",
        ),
    ],
)
def test_bad_parquet_names_row_and_column(
    tmp_path: Path, overrides: dict[str, list[object]], pattern: str, row: int, column: str
) -> None:
    path = parquet_bars(tmp_path, **overrides)
    with pytest.raises(DataError, match=pattern) as info:
        load_market_data(path)
    assert str(info.value).startswith(f"{path} row {row}: ")
    assert (info.value.row, info.value.column) == (row, column)


def test_parquet_missing_or_mistyped_column(tmp_path: Path) -> None:
    path = write_table(tmp_path, {"timestamp": pa.array([1, 2]), "open": pa.array([1.0, 2.0])})
    with pytest.raises(DataError, match=r"missing column 'high'; columns found: 'timestamp', 'open'"):
        load_market_data(path)
    path = parquet_bars(tmp_path, close=[True, True, False, True])
    with pytest.raises(DataError, match=r"column 'close' is bool, not a number"):
        load_market_data(path)


def test_truncated_parquet_is_a_data_error(tmp_path: Path) -> None:
    path = write_parquet(synthetic_ohlcv(100, seed=1), tmp_path / "bars.parquet")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"bars.parquet: cannot read Parquet file"):
        load_market_data(path)
