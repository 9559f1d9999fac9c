"""Market data: reading, validating, writing and synthesising bars and ticks.

`load_market_data` reads a file into one of two shapes, so whatever turns ticks into bars (or finer bars
into coarser ones) has a clear input:

* `Bars`: OHLCV rows, strictly ascending timestamps. From generic OHLCV CSVs (any case of
  ``date,open,high,low,close,volume`` and the other time names below), Yahoo Finance exports, Binance
  kline CSVs (with or without a header row, ms or us epochs), the backtesting.py sample `GOOG.csv`, and
  Parquet files with the same columns or the kline schema.
* `Ticks`: ``timestamp,price[,size]`` rows (CSV or Parquet), non-decreasing timestamps (several trades
  may share one). `Ticks.as_bars` is the ``tick`` timeframe: one bar per tick, as the live strategy sees
  them.

`load_ohlcv` returns the same data as the canonical frame: a tz-aware UTC `DatetimeIndex` named `ts` and
float64 columns `open, high, low, close, volume`.

Bad data fails loudly with a `DataError` naming the file, the line (CSV, 1-based, the header is line 1)
or the row (Parquet, 1-based) and the column; nothing is silently dropped, filled or re-sorted.

Speed: CSVs are parsed by pyarrow's multithreaded reader and checked with vectorised numpy. Only when
that fast path fails (a cell that is not a number, a check that does not hold, a layout pyarrow reads
differently) is the file read again by the careful pandas path, which keeps blank lines so that every
error names the exact line. Both paths accept the same files and give the same arrays.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from tradebot.core.bars import TICK, TIMEFRAMES, BarArrays, aggregate, bucket_start, describe_ns, timeframe_ns
from tradebot.core.errors import TradebotError

if TYPE_CHECKING:  # pandas and pyarrow load on first use: `tradebot backtest` overlaps them with reading
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "AUTO",
    "OHLCV_COLUMNS",
    "Bars",
    "DataError",
    "MarketData",
    "ResolvedTimeframe",
    "Ticks",
    "at_timeframe",
    "data_interval_ns",
    "data_step_ns",
    "load_market_data",
    "load_ohlcv",
    "read_market_data",
    "resolve_timeframe",
    "synthetic_ohlcv",
    "validate_market_data",
    "write_ohlcv_csv",
    "write_parquet",
]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
TICK_COLUMNS: tuple[str, ...] = ("price", "size")

# Header names accepted for the time column, in order of preference.
_TIME_NAMES: tuple[str, ...] = ("timestamp", "datetime", "date", "time", "ts", "open_time")
# Names accepted for a tick's traded quantity, in order of preference.
_SIZE_NAMES: tuple[str, ...] = ("size", "qty", "quantity", "amount", "volume")
# Binance kline layout (https://developers.binance.com/docs/binance-spot-api-docs/rest-api#klinecandlestick-data):
# the CSV exports carry these columns in this order, without a header row (newer ones with one).
BINANCE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_base",
    "taker_quote",
    "ignore",
)
PARQUET_MAGIC = b"PAR1"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class DataError(TradebotError, ValueError):
    """Invalid market data; the message names the file and, where relevant, the line (CSV) or row
    (Parquet) and the column."""

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        column: str | None = None,
        row: int | None = None,
    ):
        self.path = str(path)
        self.line = line
        self.row = row
        self.column = column
        where = self.path
        if line is not None:
            where = f"{self.path} line {line}"
        elif row is not None:
            where = f"{self.path} row {row}"
        super().__init__(f"{where}: {message}")


# ----------------------------------------------------------------------------------------------- shapes


def _datetime_index(ts: IntArray) -> pd.DatetimeIndex:
    import pandas as pd

    # The UTC dtype given, not `tz_localize("UTC")`: the same index, made 20x faster (one copy of the
    # stamps instead of a conversion pass; 0.18 s for 10M bars).
    return pd.DatetimeIndex(ts.view("datetime64[ns]"), dtype="datetime64[ns, UTC]", name="ts")


@dataclass(frozen=True, eq=False)
class Bars(BarArrays):
    """OHLCV bars: ``ts`` is epoch nanoseconds (UTC) of each bar's open, strictly ascending; prices are
    finite and > 0 with ``low <= min(open, close)`` and ``high >= max(open, close)``; volume >= 0."""

    kind: ClassVar[Literal["bars"]] = "bars"

    @classmethod
    def of(cls, arrays: BarArrays) -> Bars:
        return cls(**vars(arrays))

    def __len__(self) -> int:
        return len(self.ts)

    def index(self) -> pd.DatetimeIndex:
        return _datetime_index(self.ts)

    def frame(self) -> pd.DataFrame:
        """The canonical frame (see `load_ohlcv`)."""
        import pandas as pd

        columns = {name: getattr(self, name) for name in OHLCV_COLUMNS}
        return pd.DataFrame(columns, index=self.index(), copy=False)


@dataclass(frozen=True, eq=False)
class Ticks:
    """Trades: ``ts`` epoch nanoseconds (UTC), non-decreasing; ``price`` finite and > 0; ``size`` >= 0
    (0 when the file has no size column)."""

    kind: ClassVar[Literal["ticks"]] = "ticks"
    ts: IntArray
    price: FloatArray
    size: FloatArray

    def __len__(self) -> int:
        return len(self.ts)

    def as_bars(self) -> Bars:
        """One bar per tick (the ``tick`` timeframe): open = high = low = close = price, volume = size."""
        return Bars(self.ts, self.price, self.price, self.price, self.price, self.size)


MarketData = Bars | Ticks


def data_step_ns(data: MarketData) -> int | None:
    """The data's own timeframe as inferred from its timestamps: 0 for ticks, the shortest step between
    consecutive bars for bars (gaps such as nights and weekends are longer), None for a single bar."""
    if isinstance(data, Ticks):
        return 0
    if len(data) < 2:
        return None
    return int(np.diff(data.ts).min())


def data_interval_ns(data: Bars) -> int | None:
    """The bars' own interval: the most common positive step between consecutive timestamps (the
    shortest of equally common ones), so nights, weekends, holidays and the odd missing bar do not count.
    None for fewer than 2 bars."""
    if len(data) < 2:
        return None
    steps, counts = np.unique(np.diff(data.ts), return_counts=True)  # steps > 0: bars strictly ascend
    return int(steps[int(np.argmax(counts))])  # argmax: the first (shortest) of the most common


# `--timeframe auto`: what the data is. Resolved by `resolve_timeframe`, the one place that decides.
AUTO = "auto"
_BAR_LENGTHS: dict[int, str] = {timeframe_ns(tf): tf for tf in TIMEFRAMES if tf != TICK}


@dataclass(frozen=True)
class ResolvedTimeframe:
    """The timeframe a backtest runs on, and, when it was chosen for the user (`auto`), why."""

    timeframe: str
    requested: str
    why: str | None = None  # "auto: the data's own interval": shown beside the timeframe in reports
    warning: str | None = None  # one line for stderr when `auto` could not use the data's interval

    def label(self) -> str:
        """The timeframe as the reports show it: `1d (auto: the data's own interval)`."""
        return self.timeframe if self.why is None else f"{self.timeframe} ({self.why})"


def resolve_timeframe(data: MarketData, requested: str) -> ResolvedTimeframe:
    """`auto` (the default of `tradebot backtest` and `tradebot sweep`) becomes: for ticks, `tick`; for
    bars, the bar timeframe equal to their own interval (`data_interval_ns`), so that stops see each bar's
    open, high and low; bars whose interval is no timeframe (10 minutes, say), or a single bar, `tick`
    with a warning. Any other value is kept as it is."""
    if requested != AUTO:
        return ResolvedTimeframe(requested, requested)
    if isinstance(data, Ticks):
        return ResolvedTimeframe(TICK, AUTO, "auto: the data is ticks")
    interval = data_interval_ns(data)
    timeframe = None if interval is None else _BAR_LENGTHS.get(interval)
    if timeframe is not None:
        return ResolvedTimeframe(timeframe, AUTO, "auto: the data's own interval")
    what = "a single bar" if interval is None else f"{describe_ns(interval)} bars"
    coarser = [
        tf for length, tf in _BAR_LENGTHS.items() if interval and length > interval and not length % interval
    ]
    aggregate_into = f" (e.g. --timeframe {coarser[0]})" if coarser else ""
    return ResolvedTimeframe(
        TICK,
        AUTO,
        "auto: the data's interval is no bar timeframe",
        f"--timeframe auto: the data is {what}, which is no bar timeframe ({', '.join(TIMEFRAMES[1:])}),"
        " so each row trades as one price at its close (tick) and stops see closes only; choose"
        f" --timeframe tick to say so, or a coarser timeframe to aggregate the bars into{aggregate_into}",
    )


def at_timeframe(data: MarketData, timeframe: str, path: str | Path) -> Bars:
    """The bars a backtest on `timeframe` runs over. `tick`: one bar per row as it is (a tick is a bar of
    one price). A bar timeframe: ticks and finer bars are aggregated into bars of it (see
    `tradebot.core.bars`), bars already at it are returned unchanged, and coarser bars (or bars it is not
    a whole number of) are a `DataError` naming both timeframes."""
    if timeframe == TICK:
        return data.as_bars() if isinstance(data, Ticks) else data
    length = timeframe_ns(timeframe)
    if isinstance(data, Ticks):
        price = data.price
        return Bars.of(aggregate(data.ts, price, price, price, price, data.size, length))
    step = data_step_ns(data)
    if step is None or step == length or _own_buckets(data, length):
        return data
    if step > length:
        raise DataError(
            path,
            f"the data is {describe_ns(step)} bars, coarser than --timeframe {timeframe}: bars cannot be"
            f" split; use --timeframe {describe_ns(step)} or coarser, or finer data",
        )
    if length % step:
        raise DataError(
            path,
            f"--timeframe {timeframe} is not a whole number of the data's {describe_ns(step)} bars,"
            " so they cannot be aggregated into it",
        )
    return Bars.of(aggregate(data.ts, data.open, data.high, data.low, data.close, data.volume, length))


def _own_buckets(data: Bars, length: int) -> bool:
    """Whether bars of about `length` (their most common step) already sit one to a bucket of it, as daily
    bars stamped at a local midnight whose UTC offset moves with daylight saving (steps of 23 and 25
    hours): they are bars of the timeframe as they are, and keep their own stamps and OHLC."""
    if data_interval_ns(data) != length:
        return False
    return bool(np.all(np.diff(bucket_start(data.ts, length)) > 0))


# ----------------------------------------------------------------------------------------------- layout


def _read_first_line(path: Path) -> tuple[str | None, int]:
    """The first non-blank line of the file (None if there is none) and how many blank lines precede it."""
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        for number, raw in enumerate(fh):
            if raw.strip():
                return raw, number
    return None, 0


def _split_header(line: str) -> list[str]:
    return [field.strip() for field in next(csv.reader([line]))]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Layout:
    """What the header (or Parquet schema) told us: which columns to read and what they mean."""

    kind: Literal["bars", "ticks"]
    header: bool  # whether line 1 is a header row
    time_col: int  # position of the timestamp column
    time_name: str  # how error messages call it
    mapping: dict[str, int]  # canonical name -> column position
    width: int  # number of columns on line 1 / in the schema

    def positions(self) -> list[int]:
        return sorted({self.time_col, *self.mapping.values()})


def _layout_from_names(path: Path, fields: list[str], line: int | None) -> _Layout:
    lowered: dict[str, int] = {}
    for position, name in enumerate(fields):
        lowered.setdefault(name.strip().lower(), position)  # first occurrence wins
    time_col: int | None = None
    time_name = "timestamp"
    for candidate in _TIME_NAMES:
        if candidate in lowered:
            time_col = lowered[candidate]
            time_name = fields[time_col]
            break
    if time_col is None and fields and (fields[0] == "" or fields[0].lower().startswith("unnamed")):
        time_col = 0  # backtesting.py GOOG.csv / DataFrame.to_csv() with an unnamed index
    found = ", ".join(repr(name) for name in fields)
    if time_col is None:
        raise DataError(
            path,
            f"missing time column (expected one of {', '.join(_TIME_NAMES[:5])}); columns found: {found}",
            line=line,
        )

    columns: dict[str, int] = {}
    if "close" not in lowered and "price" in lowered:
        columns["price"] = lowered["price"]  # ticks: one trade (or one price) per row
        for name in _SIZE_NAMES:
            if name in lowered:
                columns["size"] = lowered[name]
                break
        return _Layout("ticks", True, time_col, time_name, columns, len(fields))
    for name in PRICE_COLUMNS:
        if name not in lowered:
            raise DataError(path, f"missing column '{name}'; columns found: {found}", line=line, column=name)
        columns[name] = lowered[name]
    if "volume" in lowered:
        columns["volume"] = lowered["volume"]
    return _Layout("bars", True, time_col, time_name, columns, len(fields))


def _detect_csv_layout(path: Path, first_line: str, line: int = 1) -> _Layout:
    fields = _split_header(first_line)
    if fields and _is_number(fields[0]):
        # No header: the only headerless layout we know is Binance klines.
        if len(fields) != len(BINANCE_COLUMNS):
            raise DataError(
                path,
                f"no header row, and {len(fields)} columns is not the {len(BINANCE_COLUMNS)}-column Binance "
                "kline layout; add a header such as timestamp,open,high,low,close,volume",
                line=line,
            )
        mapping = {name: BINANCE_COLUMNS.index(name) for name in OHLCV_COLUMNS}
        return _Layout("bars", False, 0, "open_time", mapping, len(fields))
    return _layout_from_names(path, fields, line=line)


# ------------------------------------------------------------------------------------------- raw columns


@dataclass(frozen=True)
class _Place:
    """Turns a row position into the error's location: a file line (CSV) or a 1-based row (Parquet)."""

    lines: IntArray | None = None  # file line of each row; None means name rows

    def __call__(self, position: int) -> dict[str, int]:
        if self.lines is None:
            return {"row": position + 1}
        return {"line": int(self.lines[position])}


class _FastPathError(TradebotError):
    """The fast CSV path cannot tell the exact line: read the file again with the careful path."""


@dataclass(frozen=True)
class RawData:
    """A file's columns as read, before any check: what `validate_market_data` turns into bars or ticks.

    ``time`` is whatever the reader produced for the time column (epoch numbers, datetime64, strings);
    ``values`` holds float64 arrays (NaN where a cell was empty) or, from the careful CSV path, the raw
    cells still to be converted.
    """

    path: Path
    layout: _Layout
    time: Any
    values: dict[str, Any]
    place: _Place
    # Set on the fast CSV path: rereads the file carefully when a check fails, to name the exact line.
    careful: Callable[[], RawData] | None = None

    def __len__(self) -> int:
        return len(self.time)


def _arrow_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        if column.null_count:
            column = column.cast(pa.float64())  # nulls become NaN: "empty" below
        return np.asarray(column.to_numpy())
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        if column.null_count:
            return np.asarray(column.to_pandas().to_numpy())  # NaT where empty
        return np.asarray(column.to_numpy())  # tz-aware or not, the values are UTC instants
    return np.asarray(column.to_pandas().to_numpy())  # strings, decimals: parsed below


def _read_csv_fast(path: Path, layout: _Layout) -> RawData:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(layout.width)]
    value_cols = {name: names[position] for name, position in layout.mapping.items()}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if layout.header else 0),
            convert_options=pacsv.ConvertOptions(
                include_columns=[names[p] for p in layout.positions()],
                column_types={column: pa.float64() for column in value_cols.values()},
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _FastPathError from exc
    return RawData(
        path=path,
        layout=layout,
        time=_arrow_to_numpy(table.column(names[layout.time_col])),
        values={name: _arrow_to_numpy(table.column(column)) for name, column in value_cols.items()},
        place=_Place(),
        careful=lambda: _read_csv_careful(path, layout),
    )


def _read_csv_careful(path: Path, layout: _Layout, blank_above: int = 0) -> RawData:
    """pandas' C parser, keeping blank lines so that each row knows its file line."""
    import pandas as pd

    positions = layout.positions()
    read_kwargs: dict[str, Any] = {
        "engine": "c",
        "usecols": positions,
        "header": 0 if layout.header else None,
        "skip_blank_lines": False,  # keep blank lines so row numbers map to file lines
        "float_precision": "round_trip",  # exact: write_ohlcv_csv -> load_ohlcv reproduces every float
        "encoding": "utf-8-sig",
        "skipinitialspace": True,
        "skiprows": blank_above,
    }
    try:
        raw = pd.read_csv(path, **read_kwargs)
    except pd.errors.EmptyDataError as exc:
        raise DataError(path, "file is empty") from exc
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot parse CSV: {exc}") from exc

    raw.columns = pd.Index([f"c{p}" for p in positions])
    first_data_line = blank_above + (2 if layout.header else 1)
    lines = np.arange(first_data_line, first_data_line + len(raw), dtype=np.int64)
    if len(raw) and raw.isna().to_numpy().any():
        blank = raw.isna().all(axis=1).to_numpy()
        if blank.any():
            # Blank lines carry no data; drop them but keep every other row's real line number.
            # (The C parser skips the final newline-only line, so a trailing blank line is harmless.)
            raw = raw.loc[~blank]
            lines = lines[~blank]
    return RawData(
        path=path,
        layout=layout,
        time=raw[f"c{layout.time_col}"],
        values={name: raw[f"c{position}"] for name, position in layout.mapping.items()},
        place=_Place(lines),
    )


def _plain_dtype(column_type: pa.DataType, *, is_time: bool) -> np.dtype[Any] | None:
    """The numpy dtype a column is copied into by `_read_parquet_plain`, or None: the general path."""
    import pyarrow as pa

    if pa.types.is_floating(column_type) or pa.types.is_integer(column_type):
        # Prices and sizes as float64 (as the general path casts them); epoch times keep their type.
        return np.dtype(column_type.to_pandas_dtype()) if is_time else np.dtype(np.float64)
    if is_time and pa.types.is_timestamp(column_type):
        return np.dtype(f"datetime64[{column_type.unit}]")  # tz-aware or not, the values are UTC instants
    return None


def _read_parquet_plain(
    path: Path, schema: pa.Schema, wanted: list[str], time_name: str
) -> dict[str, np.ndarray] | None:
    """The usual file (numbers and a timestamp, no empty cell) read one row group at a time straight
    into numpy arrays allocated once; None when a column needs the general path (strings, decimals,
    dates, empty cells). Reading the whole table and then converting it holds three copies of the data
    at once (the compressed pages, Arrow's chunks, their concatenation: 1.6 GB for 10M bars, where this
    holds one, 0.7 GB), and on a read this size first touches of fresh memory cost more than decoding."""
    import pyarrow.parquet as pq

    dtypes: dict[str, np.dtype[Any]] = {}
    for name in wanted:
        dtype = _plain_dtype(schema.field(name).type, is_time=name == time_name)
        if dtype is None:
            return None
        dtypes[name] = dtype
    source = pq.ParquetFile(path)
    rows = source.metadata.num_rows
    out = {name: np.empty(rows, dtype=dtype) for name, dtype in dtypes.items()}
    start = 0
    for group in range(source.num_row_groups):
        table = source.read_row_group(group, columns=wanted, use_threads=True)
        for name in wanted:
            column = table.column(name)
            if column.null_count:
                return None  # empty cells: the general path names the row
            at = start
            for chunk in column.chunks:
                values = chunk.to_numpy(zero_copy_only=False)
                out[name][at : at + len(values)] = values
                at += len(values)
        start += table.num_rows
    if start != rows:
        return None
    return out


def _read_parquet(path: Path) -> RawData:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(path, f"cannot read Parquet file ({exc})") from exc
    names = list(schema.names)
    layout = _layout_from_names(path, names, line=None)
    wanted = [names[p] for p in layout.positions()]
    try:
        columns = _read_parquet_plain(path, schema, wanted, names[layout.time_col])
        if columns is not None:
            return RawData(
                path=path,
                layout=layout,
                time=columns[names[layout.time_col]],
                values={name: columns[names[position]] for name, position in layout.mapping.items()},
                place=_Place(),
            )
        table = pq.read_table(path, columns=wanted, use_threads=True)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(path, f"cannot read Parquet file ({exc})") from exc
    values: dict[str, Any] = {}
    for name, position in layout.mapping.items():
        column = table.column(names[position])
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            values[name] = _arrow_to_numpy(column).astype(np.float64, copy=False)
        elif pa.types.is_decimal(column.type) or pa.types.is_string(column.type):
            values[name] = column.to_pandas()  # converted (with errors naming the row) below
        else:
            raise DataError(
                path, f"column {names[position]!r} is {column.type}, not a number", column=names[position]
            )
    return RawData(
        path=path,
        layout=layout,
        time=_arrow_to_numpy(table.column(names[layout.time_col])),
        values=values,
        place=_Place(),
    )


def read_market_data(path: str | Path) -> RawData:
    """Read a CSV or Parquet file's columns (the "read" phase of `tradebot backtest --profile`)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(PARQUET_MAGIC))
        if magic == PARQUET_MAGIC:
            return _read_parquet(path)
        first_line, blank_above = _read_first_line(path)
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not a UTF-8 text file ({exc.reason})") from exc
    if first_line is None:
        raise DataError(path, "file is empty")
    layout = _detect_csv_layout(path, first_line, line=blank_above + 1)
    if blank_above == 0:  # else the careful reader, which counts the lines above the header
        try:
            return _read_csv_fast(path, layout)
        except _FastPathError:
            pass
    return _read_csv_careful(path, layout, blank_above)


# ------------------------------------------------------------------------------------------- validation


def _first(mask: np.ndarray) -> int | None:
    """Position of the first True in a boolean array, or None."""
    if not mask.any():
        return None
    return int(np.argmax(mask))


def _parse_numeric(raw: RawData, values: Any, column: str) -> FloatArray:
    """float64 values of a column; a cell that is not a number fails with its line or row."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        return values.astype(np.float64, copy=False)
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        numbers: FloatArray = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return numbers
    converted = pd.to_numeric(series, errors="coerce")
    bad = _first((converted.isna() & series.notna()).to_numpy())
    if bad is not None:
        value = series.iloc[bad]
        raise DataError(raw.path, f"{column} is not a number ({value!r})", column=column, **raw.place(bad))
    out: FloatArray = converted.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def _epoch_unit(values: np.ndarray) -> Literal["s", "ms", "us", "ns"]:
    """Guess the unit of epoch numbers from their magnitude (seconds up to year ~5000, then ms, us, ns)."""
    biggest = float(np.nanmax(np.abs(values))) if len(values) else 0.0
    if biggest < 1e11:
        return "s"
    if biggest < 1e14:
        return "ms"
    if biggest < 1e17:
        return "us"
    return "ns"


def _epoch_to_ns(raw: RawData, numbers: np.ndarray, column: str) -> IntArray:
    import pandas as pd

    unit = _epoch_unit(numbers.astype(np.float64, copy=False))
    try:
        parsed = pd.to_datetime(numbers, unit=unit, utc=True)
    except (ValueError, OverflowError) as exc:
        raise DataError(
            raw.path, f"{column} holds an out-of-range epoch timestamp ({exc})", column=column
        ) from exc
    return _nanoseconds(pd.DatetimeIndex(parsed))


def _nanoseconds(index: pd.DatetimeIndex) -> IntArray:
    """Epoch nanoseconds (UTC) of a DatetimeIndex, whatever its unit."""
    values: npt.NDArray[np.datetime64] = index.to_numpy(dtype="datetime64[ns]")
    return values.view(np.int64)


_NS_RANGE = (np.datetime64("1677-09-22", "s"), np.datetime64("2262-04-11", "s"))


def _parse_time(raw: RawData) -> IntArray:
    """Epoch nanoseconds (UTC) of the time column: datetimes (naive means UTC), ISO-8601 and other
    strings pandas understands, or epoch numbers in s, ms, us or ns."""
    column = raw.layout.time_name
    values = raw.time
    if isinstance(values, np.ndarray) and values.dtype.kind == "M":
        if len(values) and values.view(np.int64).min() == np.iinfo(np.int64).min:  # NaT, without a mask
            nat = int(np.argmax(np.isnat(values)))
            raise DataError(raw.path, f"{column} is empty", column=column, **raw.place(nat))
        # A cast to nanoseconds wraps around outside 1677..2262 instead of failing: check the range first.
        if values.dtype != np.dtype("datetime64[ns]") and (
            values.min() < _NS_RANGE[0] or values.max() > _NS_RANGE[1]
        ):
            raise DataError(raw.path, f"{column} holds a timestamp outside 1677..2262", column=column)
        # A copy only when needed: numba compiles read-only arrays (Arrow's zero-copy ones) apart.
        keep = values.dtype == np.dtype("datetime64[ns]") and values.flags.writeable
        ns: IntArray = (values if keep else values.astype("datetime64[ns]")).view(np.int64)
        return ns
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return _epoch_to_ns(raw, values, column)
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        missing = _first(np.isnan(values))
        if missing is not None:
            raise DataError(raw.path, f"{column} is empty", column=column, **raw.place(missing))
        return _epoch_to_ns(raw, values, column)

    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values)
    missing = _first(series.isna().to_numpy())
    if missing is not None:
        raise DataError(raw.path, f"{column} is empty", column=column, **raw.place(missing))
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return _nanoseconds(pd.DatetimeIndex(pd.to_datetime(series, utc=True)))
    numeric = pd.api.types.is_numeric_dtype(series.dtype)
    if not numeric and len(series) and _is_number(str(series.iloc[0])):
        # Epoch numbers with some junk in the column: report the junk.
        _parse_numeric(raw, series, column)
        numeric = True
    if numeric:
        numbers = series if pd.api.types.is_numeric_dtype(series.dtype) else pd.to_numeric(series)
        return _epoch_to_ns(raw, numbers.to_numpy(), column)

    text = series.astype(str)
    parsed_iso = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad_iso = parsed_iso.isna().to_numpy()
    if not bad_iso.any():
        return _nanoseconds(pd.DatetimeIndex(parsed_iso))
    parsed_any = pd.to_datetime(text, utc=True, errors="coerce")  # other formats, inferred from row 1
    if not parsed_any.isna().to_numpy().any():
        return _nanoseconds(pd.DatetimeIndex(parsed_any))
    bad = int(np.argmax(bad_iso))
    raise DataError(
        raw.path, f"{column} is not a valid timestamp ({series.iloc[bad]!r})", column=column, **raw.place(bad)
    )


def _iso(ns: int) -> str:
    import pandas as pd

    return pd.Timestamp(ns, tz="UTC").isoformat()


def _check_positive(raw: RawData, values: FloatArray, name: str) -> None:
    # One comparison catches NaN, inf and <= 0 (NaN compares false); the slow part runs only on failure.
    if bool(np.all((values > 0.0) & (values < math.inf))):
        return
    bad = _first(~np.isfinite(values))
    if bad is not None:
        what = "empty" if np.isnan(values[bad]) else f"not finite ({float(values[bad])!r})"
        raise DataError(raw.path, f"{name} is {what}", column=name, **raw.place(bad))
    bad = _first(values <= 0.0)
    assert bad is not None
    raise DataError(
        raw.path, f"{name} must be > 0 (got {float(values[bad])!r})", column=name, **raw.place(bad)
    )


def _check_quantity(raw: RawData, values: FloatArray, name: str) -> None:
    if bool(np.all((values >= 0.0) & (values < math.inf))):
        return
    bad = _first(~np.isfinite(values) | (values < 0.0))
    assert bad is not None
    what = "empty" if np.isnan(values[bad]) else f"invalid ({float(values[bad])!r})"
    raise DataError(raw.path, f"{name} is {what}", column=name, **raw.place(bad))


def _check_order(raw: RawData, stamps: IntArray, *, strict: bool) -> None:
    if len(stamps) < 2:
        return
    step = np.diff(stamps)
    broken = step <= 0 if strict else step < 0
    bad = _first(broken)
    if bad is None:
        return
    i = bad + 1  # the row where order breaks
    column = raw.layout.time_name
    when = _iso(int(stamps[i]))
    # Rows 0..i-1 are in order, so a binary search finds an earlier equal stamp.
    j = int(np.searchsorted(stamps[:i], stamps[i]))
    if strict and j < i and stamps[j] == stamps[i]:
        also = raw.place(j)
        other = f"line {also['line']}" if "line" in also else f"row {also['row']}"
        raise DataError(
            raw.path, f"duplicate timestamp {when} (also on {other})", column=column, **raw.place(i)
        )
    before = raw.place(i - 1)
    other = f"line {before['line']}" if "line" in before else f"row {before['row']}"
    raise DataError(
        raw.path,
        f"timestamps not in ascending order: {when} comes after {_iso(int(stamps[i - 1]))} ({other})",
        column=column,
        **raw.place(i),
    )


# Rows per slice of the all-in-one check: its scratch arrays (2 MB) are allocated once and stay in cache.
_CHECK_CHUNK = 1 << 18


def _all_hold(
    stamps: IntArray,
    positive: list[FloatArray],
    quantity: FloatArray | None,
    spread: tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None,
    *,
    strict: bool,
) -> bool:
    """Whether every check holds, in one pass over slices with reused scratch arrays. Fresh temporaries the
    size of the data cost more in page faults than the arithmetic on them; the named checks (which find
    the row) run only when this says no."""
    n = len(stamps)
    size = min(n, _CHECK_CHUNK)
    scratch = np.empty(size)
    ok_buffer = np.empty(size, dtype=bool)
    other_buffer = np.empty(size, dtype=bool)
    for start in range(0, n, _CHECK_CHUNK):
        stop = min(start + _CHECK_CHUNK, n)
        rows = stop - start
        ok, other, top = ok_buffer[:rows], other_buffer[:rows], scratch[:rows]
        for values in positive:  # finite and > 0 (NaN compares false)
            part = values[start:stop]
            np.greater(part, 0.0, out=ok)
            np.less(part, math.inf, out=other)
            if not np.logical_and(ok, other, out=ok).all():
                return False
        if quantity is not None:
            part = quantity[start:stop]
            np.greater_equal(part, 0.0, out=ok)
            np.less(part, math.inf, out=other)
            if not np.logical_and(ok, other, out=ok).all():
                return False
        if spread is not None:
            o, h, lo, c = (column[start:stop] for column in spread)
            if not np.greater_equal(h, np.maximum(o, c, out=top), out=ok).all():
                return False
            if not np.less_equal(lo, np.minimum(o, c, out=top), out=ok).all():
                return False
        later, earlier = stamps[start + 1 : stop + 1], stamps[start : min(stop, n - 1)]
        steps = ok[: len(later)]
        (np.greater if strict else np.greater_equal)(later, earlier, out=steps)
        if not steps.all():
            return False
    return True


def _validate(raw: RawData) -> MarketData:
    if len(raw) == 0:
        raise DataError(raw.path, "no data rows")
    stamps = _parse_time(raw)
    numbers = {name: _parse_numeric(raw, values, name) for name, values in raw.values.items()}
    n = len(stamps)
    if raw.layout.kind == "ticks":
        price = numbers["price"]
        size = numbers.get("size")
        if not _all_hold(stamps, [price], size, None, strict=False):
            _check_positive(raw, price, "price")
            if size is not None:
                _check_quantity(raw, size, "size")
            _check_order(raw, stamps, strict=False)
        if size is None:
            size = np.zeros(n, dtype=np.float64)
        return Ticks(stamps, np.ascontiguousarray(price), np.ascontiguousarray(size))

    o, h, lo, c = (numbers[name] for name in PRICE_COLUMNS)
    volume = numbers.get("volume")
    if not _all_hold(stamps, [o, h, lo, c], volume, (o, h, lo, c), strict=True):
        _check_bars(raw, numbers, stamps)
    if volume is None:
        volume = np.zeros(n, dtype=np.float64)
    arrays = (np.ascontiguousarray(a) for a in (o, h, lo, c, volume))
    return Bars(stamps, *arrays)


def _check_bars(raw: RawData, numbers: dict[str, FloatArray], stamps: IntArray) -> None:
    """Each check in turn, raising for the first row that fails one."""
    o, h, lo, c = (numbers[name] for name in PRICE_COLUMNS)
    for name in PRICE_COLUMNS:
        _check_positive(raw, numbers[name], name)
    volume = numbers.get("volume")
    if volume is not None:
        _check_quantity(raw, volume, "volume")
    top = np.maximum(o, c)
    bad = _first(h < top)
    if bad is not None:
        raise DataError(
            raw.path,
            f"high {float(h[bad])!r} is below max(open, close) {float(top[bad])!r}",
            column="high",
            **raw.place(bad),
        )
    bottom = np.minimum(o, c)
    bad = _first(lo > bottom)
    if bad is not None:
        raise DataError(
            raw.path,
            f"low {float(lo[bad])!r} is above min(open, close) {float(bottom[bad])!r}",
            column="low",
            **raw.place(bad),
        )
    _check_order(raw, stamps, strict=True)


def validate_market_data(raw: RawData) -> MarketData:
    """Check and convert what `read_market_data` read (the "validate" phase): bars or ticks, or a
    `DataError` naming the line (CSV) or row (Parquet) and column of the first problem."""
    try:
        return _validate(raw)
    except DataError:
        if raw.careful is None:
            raise
        # The fast path does not know line numbers (blank lines are skipped): name the exact line.
        return _validate(raw.careful())


def load_market_data(path: str | Path) -> MarketData:
    """Read and validate a CSV or Parquet file: `Bars` or `Ticks` (see the module docstring)."""
    return validate_market_data(read_market_data(path))


def load_ohlcv(path: str | Path) -> pd.DataFrame:
    """Load a market data file into the canonical frame; raise `DataError` on anything suspicious.

    Returns a frame indexed by a tz-aware UTC `DatetimeIndex` named ``ts`` with float64 columns
    ``open, high, low, close, volume`` (volume 0.0 when the file has none), in file order. Bars must be
    strictly ascending; tick files give one bar per tick (open = high = low = close = price, volume =
    size). Naive timestamps are taken as UTC; epoch numbers may be in s, ms, us or ns.
    """
    data = load_market_data(path)
    bars = data.as_bars() if isinstance(data, Ticks) else data
    return bars.frame()


def _columns_of(data: MarketData | pd.DataFrame) -> Mapping[str, np.ndarray]:
    if isinstance(data, Bars):
        return {"timestamp": data.ts.view("datetime64[ns]"), **{n: getattr(data, n) for n in OHLCV_COLUMNS}}
    if isinstance(data, Ticks):
        return {"timestamp": data.ts.view("datetime64[ns]"), "price": data.price, "size": data.size}
    import pandas as pd

    if not isinstance(data.index, pd.DatetimeIndex):
        raise TypeError("write_parquet needs bars, ticks or a frame indexed by a DatetimeIndex")
    index = data.index.tz_convert("UTC") if data.index.tz is not None else data.index
    stamps = index.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return {"timestamp": stamps, **{str(c): data[c].to_numpy(dtype=np.float64) for c in data.columns}}


def write_parquet(data: MarketData | pd.DataFrame, path: str | Path) -> Path:
    """Write bars, ticks or a frame with a DatetimeIndex as Parquet: a ``timestamp`` column
    (timestamp[ns, UTC]) and float64 value columns, which `load_market_data` reads back exactly."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    columns = _columns_of(data)
    arrays = [
        pa.array(columns["timestamp"], type=pa.timestamp("ns")).cast(pa.timestamp("ns", tz="UTC")),
        *(pa.array(values, type=pa.float64()) for name, values in columns.items() if name != "timestamp"),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, names=list(columns)), path)
    return path


# ----------------------------------------------------------------------------------------------- writing


def _iso_strings(index: pd.DatetimeIndex) -> np.ndarray:
    """ISO-8601 UTC strings at the coarsest unit that keeps every timestamp exact: plain dates for
    midnight-stamped (daily) data, else date-times with a 'Z' suffix."""
    utc = index.tz_convert("UTC") if index.tz is not None else index
    values: npt.NDArray[np.datetime64] = utc.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    ns = values.view(np.int64)
    unit: Literal["D", "s", "ms", "us", "ns"] = "ns"
    candidates: tuple[tuple[Literal["D", "s", "ms", "us"], int], ...] = (
        ("D", 86_400_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    )
    for candidate, size in candidates:
        if not np.any(ns % size):
            unit = candidate
            break
    strings: npt.NDArray[np.str_] = np.datetime_as_string(values, unit=unit, timezone="UTC")
    return strings


def write_ohlcv_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` in the generic layout ``timestamp,open,high,low,close,volume`` (ISO-8601 UTC).

    Floats are written at full (shortest round-trip) precision, so `load_ohlcv` reads the file back
    exactly. ``df`` must have a `DatetimeIndex` (naive means UTC); a missing volume column is written as 0.
    """
    import pandas as pd

    path = Path(path)
    if not isinstance(df.index, pd.DatetimeIndex):
        raise TypeError("write_ohlcv_csv needs a frame indexed by a DatetimeIndex")
    out: dict[str, Any] = {"timestamp": _iso_strings(df.index)}
    for name in OHLCV_COLUMNS:
        if name in df.columns:
            out[name] = df[name].to_numpy(dtype=np.float64)
        elif name == "volume":
            out[name] = np.zeros(len(df), dtype=np.float64)
        else:
            raise KeyError(f"column {name!r} missing from the frame")
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(out).to_csv(path, index=False, lineterminator="\n")
    return path


# ---------------------------------------------------------------------------------------------- synthetic

# Regimes last this many bars on average (a symmetric 2-state Markov chain switches with p = 1/this).
_MEAN_REGIME_BARS = 400
# Within a regime the trend is drawn as N(0, this) per-bar volatilities per bar: strong enough that
# a regime's drift (~0.03 * 400 = 12 sigma) is comparable to its noise (sqrt(400) = 20 sigma).
_TREND_STRENGTH = 0.03
_VOL_STATES = (0.7, 1.6)  # calm / turbulent multiples of `volatility`


def _bars_per_year(start: str, freq: str) -> float:
    import pandas as pd

    from tradebot.backtest.metrics import infer_bars_per_year  # deferred: metrics is the heavier module

    probe = pd.date_range(start=start, periods=64, freq=freq, tz="UTC")
    return infer_bars_per_year(probe)


def synthetic_ohlcv(
    n_bars: int,
    *,
    seed: int = 0,
    start: str = "2020-01-01",
    freq: str = "1min",
    start_price: float = 100.0,
    drift: float = 0.0,
    volatility: float = 0.2,
    regime_switching: bool = True,
) -> pd.DataFrame:
    """A seeded, realistic OHLCV series in the canonical `load_ohlcv` shape.

    Closes follow geometric Brownian motion with annualised ``drift`` and ``volatility`` scaled to the
    bar frequency (bars per year inferred as in `metrics.infer_bars_per_year`). With
    ``regime_switching`` a 2-state Markov chain alternates calm and turbulent volatility, and each regime
    carries its own random trend, so moving-average strategies have something to find. Each open is the
    previous close times a small gap; high/low bracket open and close; volume is positive and rises
    with volatility. The same arguments always give an identical frame.
    """
    import pandas as pd

    if n_bars < 0:
        raise ValueError("n_bars must be >= 0")
    if start_price <= 0 or volatility < 0:
        raise ValueError("start_price must be > 0 and volatility >= 0")
    rng = np.random.default_rng(seed)
    index = pd.date_range(start=start, periods=n_bars, freq=freq, tz="UTC", name="ts")
    bars_per_year = _bars_per_year(start, freq)
    sigma = volatility / math.sqrt(bars_per_year)  # per-bar volatility
    mu = drift / bars_per_year  # per-bar drift

    if regime_switching and n_bars:
        switches = rng.random(n_bars) < 1.0 / _MEAN_REGIME_BARS
        switches[0] = False
        regime = np.cumsum(switches)
        first_state = int(rng.integers(0, 2))
        vol_mult = np.asarray(_VOL_STATES, dtype=np.float64)[(regime + first_state) % 2]
        trends = rng.standard_normal(int(regime[-1]) + 1) * _TREND_STRENGTH
        sig = sigma * vol_mult
        trend = trends[regime] * sig
    else:
        vol_mult = np.ones(n_bars)
        sig = np.full(n_bars, sigma)
        trend = np.zeros(n_bars)

    shocks = rng.standard_normal(n_bars)
    log_ret = mu - 0.5 * sig * sig + trend + sig * shocks
    close = start_price * np.exp(np.cumsum(log_ret))
    prev_close = np.empty(n_bars)
    if n_bars:
        prev_close[0] = start_price
        prev_close[1:] = close[:-1]
    # The overnight/inter-bar gap is a small slice of the bar's move.
    gap = rng.standard_normal(n_bars) * 0.1 * sig
    open_ = prev_close * np.exp(gap)
    upper = np.maximum(open_, close)
    lower = np.minimum(open_, close)
    high = upper * np.exp(np.abs(rng.standard_normal(n_bars)) * 0.5 * sig)
    low = lower * np.exp(-np.abs(rng.standard_normal(n_bars)) * 0.5 * sig)
    volume = 1_000.0 * vol_mult * np.exp(0.5 * rng.standard_normal(n_bars))
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
    )
