"""OHLCV loading, validation and synthetic data.

`load_ohlcv` reads the CSV layouts we meet in practice (generic OHLCV, Yahoo Finance daily exports,
Binance klines, price-only "seed" files and the backtesting.py sample `GOOG.csv`) into one canonical
frame: a tz-aware UTC `DatetimeIndex` named `ts` and float64 columns `open, high, low, close, volume`.
Bad data fails loudly with a `DataError` naming the file, the line (1-based, header is line 1) and the
column; nothing is silently dropped, filled or re-sorted. Parsing is `pandas.read_csv` with the C engine
and every check is vectorised, so ten million rows load in seconds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from tradebot.core.errors import TradebotError

__all__ = ["OHLCV_COLUMNS", "DataError", "load_ohlcv", "synthetic_ohlcv", "write_ohlcv_csv"]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

# Header names accepted for the time column, in order of preference.
_TIME_NAMES: tuple[str, ...] = ("timestamp", "datetime", "date", "time", "ts", "open_time")
# Binance kline CSV layout (https://developers.binance.com/docs/binance-spot-api-docs/rest-api#klinecandlestick-data).
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


class DataError(TradebotError, ValueError):
    """Invalid market data; the message names the file and, where relevant, the line and column."""

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, column: str | None = None):
        self.path = str(path)
        self.line = line
        self.column = column
        where = self.path if line is None else f"{self.path} line {line}"
        super().__init__(f"{where}: {message}")


# ----------------------------------------------------------------------------------------------- loading


def _read_first_line(path: Path) -> str | None:
    """The first non-blank line of the file, or None if the file holds no data at all."""
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        for raw in fh:
            if raw.strip():
                return raw
    return None


def _split_header(line: str) -> list[str]:
    return [field.strip() for field in next(csv.reader([line]))]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _Layout:
    """What the header told us: which file columns to read and what they mean."""

    def __init__(self, *, header: bool, time_col: int, time_name: str, mapping: dict[str, int], width: int):
        self.header = header  # whether line 1 is a header row
        self.time_col = time_col  # position of the timestamp column
        self.time_name = time_name  # how error messages call it
        self.mapping = mapping  # canonical name -> column position ("price" stands for all four prices)
        self.width = width  # number of columns on line 1


def _detect_layout(path: Path, first_line: str) -> _Layout:
    fields = _split_header(first_line)
    if fields and _is_number(fields[0]):
        # No header: the only headerless layout we know is Binance klines.
        if len(fields) != len(BINANCE_COLUMNS):
            raise DataError(
                path,
                f"no header row, and {len(fields)} columns is not the {len(BINANCE_COLUMNS)}-column Binance "
                "kline layout; add a header such as timestamp,open,high,low,close,volume",
                line=1,
            )
        mapping = {name: BINANCE_COLUMNS.index(name) for name in OHLCV_COLUMNS}
        return _Layout(header=False, time_col=0, time_name="open_time", mapping=mapping, width=len(fields))

    lowered: dict[str, int] = {}
    for position, name in enumerate(fields):
        lowered.setdefault(name.lower(), position)  # first occurrence wins
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
            line=1,
        )

    columns: dict[str, int] = {}
    if "close" not in lowered and "price" in lowered:
        columns["price"] = lowered["price"]  # seed format: one price per row
    else:
        for name in PRICE_COLUMNS:
            if name not in lowered:
                raise DataError(path, f"missing column '{name}'; columns found: {found}", line=1, column=name)
            columns[name] = lowered[name]
    if "volume" in lowered:
        columns["volume"] = lowered["volume"]
    return _Layout(header=True, time_col=time_col, time_name=time_name, mapping=columns, width=len(fields))


def _nanoseconds(index: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
    """Epoch nanoseconds (UTC) of a DatetimeIndex, whatever its unit."""
    values: npt.NDArray[np.datetime64] = index.to_numpy(dtype="datetime64[ns]")
    return values.view(np.int64)


def _first(mask: np.ndarray) -> int | None:
    """Position of the first True in a boolean array, or None."""
    if not mask.any():
        return None
    return int(np.argmax(mask))


def _parse_numeric(path: Path, series: pd.Series, column: str, lines: np.ndarray) -> np.ndarray:
    """float64 values of a column; a non-numeric cell fails with its line."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(series, errors="coerce")
    bad = _first((converted.isna() & series.notna()).to_numpy())
    if bad is not None:
        value = series.iloc[bad]
        raise DataError(path, f"{column} is not a number ({value!r})", line=int(lines[bad]), column=column)
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


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


def _parse_time(path: Path, series: pd.Series, column: str, lines: np.ndarray) -> pd.DatetimeIndex:
    missing = _first(series.isna().to_numpy())
    if missing is not None:
        raise DataError(path, f"{column} is empty", line=int(lines[missing]), column=column)

    numeric = pd.api.types.is_numeric_dtype(series.dtype)
    if not numeric and len(series) and _is_number(str(series.iloc[0])):
        # Epoch numbers with some junk in the column: report the junk.
        _parse_numeric(path, series, column, lines)
        numeric = True
    if numeric:
        numbers = series if pd.api.types.is_numeric_dtype(series.dtype) else pd.to_numeric(series)
        unit = _epoch_unit(numbers.to_numpy(dtype=np.float64))
        try:
            parsed = pd.to_datetime(numbers, unit=unit, utc=True)
        except (ValueError, OverflowError) as exc:
            raise DataError(
                path, f"{column} holds an out-of-range epoch timestamp ({exc})", column=column
            ) from exc
        return pd.DatetimeIndex(parsed)

    text = series.astype(str)
    parsed_iso = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad_iso = parsed_iso.isna().to_numpy()
    if not bad_iso.any():
        return pd.DatetimeIndex(parsed_iso)
    parsed_any = pd.to_datetime(text, utc=True, errors="coerce")  # other formats, inferred from row 1
    if not parsed_any.isna().to_numpy().any():
        return pd.DatetimeIndex(parsed_any)
    bad = int(np.argmax(bad_iso))
    raise DataError(
        path, f"{column} is not a valid timestamp ({series.iloc[bad]!r})", line=int(lines[bad]), column=column
    )


def load_ohlcv(path: str | Path) -> pd.DataFrame:
    """Load an OHLCV CSV file into the canonical frame; raise `DataError` on anything suspicious.

    Returns a frame indexed by a tz-aware UTC `DatetimeIndex` named ``ts`` with float64 columns
    ``open, high, low, close, volume`` (volume 0.0 when the file has none), in file order, which must be
    strictly ascending. Naive timestamps are taken as UTC; epoch numbers may be in s, ms, us or ns.
    """
    path = Path(path)
    try:
        first_line = _read_first_line(path)
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not a UTF-8 text file ({exc.reason})") from exc
    if first_line is None:
        raise DataError(path, "file is empty")
    layout = _detect_layout(path, first_line)

    positions = sorted({layout.time_col, *layout.mapping.values()})
    read_kwargs: dict[str, Any] = {
        "engine": "c",
        "usecols": positions,
        "header": 0 if layout.header else None,
        "skip_blank_lines": False,  # keep blank lines so row numbers map to file lines
        "float_precision": "round_trip",  # exact: write_ohlcv_csv -> load_ohlcv reproduces every float
        "encoding": "utf-8-sig",
        "skipinitialspace": True,
    }
    try:
        raw = pd.read_csv(path, **read_kwargs)
    except pd.errors.EmptyDataError as exc:
        raise DataError(path, "file is empty") from exc
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot parse CSV: {exc}") from exc

    raw.columns = pd.Index([f"c{p}" for p in positions])
    offset = 2 if layout.header else 1
    lines = np.arange(offset, offset + len(raw), dtype=np.int64)
    if len(raw) and raw.isna().to_numpy().any():
        blank = raw.isna().all(axis=1).to_numpy()
        if blank.any():
            # Blank lines carry no data; drop them but keep every other row's real line number.
            # (The C parser skips the final newline-only line, so a trailing blank line is harmless.)
            raw = raw.loc[~blank]
            lines = lines[~blank]
    if len(raw) == 0:
        raise DataError(path, "no data rows")

    ts = _parse_time(path, raw[f"c{layout.time_col}"], layout.time_name, lines)

    columns: dict[str, np.ndarray] = {}
    for name, file_col in layout.mapping.items():
        label = "price" if name == "price" else name
        columns[name] = _parse_numeric(path, raw[f"c{file_col}"], label, lines)
    if "price" in columns:
        price = columns.pop("price")
        columns = {"open": price, "high": price, "low": price, "close": price, **columns}
    if "volume" not in columns:
        columns["volume"] = np.zeros(len(raw), dtype=np.float64)

    price_cols = ("price",) if "price" in layout.mapping else PRICE_COLUMNS
    for name in price_cols:
        values = columns["close" if name == "price" else name]
        bad = _first(~np.isfinite(values))
        if bad is not None:
            what = "empty" if np.isnan(values[bad]) else f"not finite ({float(values[bad])!r})"
            raise DataError(path, f"{name} is {what}", line=int(lines[bad]), column=name)
        bad = _first(values <= 0.0)
        if bad is not None:
            raise DataError(
                path, f"{name} must be > 0 (got {float(values[bad])!r})", line=int(lines[bad]), column=name
            )
    volume = columns["volume"]
    bad = _first(~np.isfinite(volume) | (volume < 0.0))
    if bad is not None:
        what = "empty" if np.isnan(volume[bad]) else f"invalid ({float(volume[bad])!r})"
        raise DataError(path, f"volume is {what}", line=int(lines[bad]), column="volume")

    o, h, lo, c = columns["open"], columns["high"], columns["low"], columns["close"]
    top = np.maximum(o, c)
    bad = _first(h < top)
    if bad is not None:
        raise DataError(
            path,
            f"high {float(h[bad])!r} is below max(open, close) {float(top[bad])!r}",
            line=int(lines[bad]),
            column="high",
        )
    bottom = np.minimum(o, c)
    bad = _first(lo > bottom)
    if bad is not None:
        raise DataError(
            path,
            f"low {float(lo[bad])!r} is above min(open, close) {float(bottom[bad])!r}",
            line=int(lines[bad]),
            column="low",
        )

    stamps = _nanoseconds(ts)
    if len(stamps) > 1:
        step = np.diff(stamps)
        bad = _first(step <= 0)
        if bad is not None:
            i = bad + 1  # the row where order breaks
            when = ts[i].isoformat()
            # Rows 0..i-1 are strictly increasing, so a binary search finds an earlier equal stamp.
            j = int(np.searchsorted(stamps[:i], stamps[i]))
            if j < i and stamps[j] == stamps[i]:
                raise DataError(
                    path,
                    f"duplicate timestamp {when} (also on line {int(lines[j])})",
                    line=int(lines[i]),
                    column=layout.time_name,
                )
            raise DataError(
                path,
                f"timestamps not in ascending order: {when} comes after {ts[i - 1].isoformat()} "
                f"(line {int(lines[i - 1])})",
                line=int(lines[i]),
                column=layout.time_name,
            )

    index = pd.DatetimeIndex(ts, name="ts")
    return pd.DataFrame({name: columns[name] for name in OHLCV_COLUMNS}, index=index)


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
