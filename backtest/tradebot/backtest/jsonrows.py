"""A table as a JSON array of one object per row, byte for byte what orjson writes for a list of dicts,
without making the dicts.

Hundreds of thousands of trades cost more as Python objects (a dict per trade, a string or float per
cell) than as JSON: 193,602 trades took 0.6 s that way. Here each column is encoded whole (orjson
writes a numeric array in one call; times are laid out as one byte matrix; text is encoded once per
distinct value) into one byte buffer with the start and end of each row's value, and a compiled loop
interleaves the columns row by row with the fixed text between them (keys, indentation, braces).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numba
import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

__all__ = ["jsonable", "rows_json", "rows_json_parts"]

_COMMA = ord(",")
_NULL = b"null"


class EncodedColumn(NamedTuple):
    """Row ``i``'s JSON text is ``text[starts[i]:ends[i]]``."""

    text: npt.NDArray[np.uint8]
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, timestamps ISO-8601, NaN/inf/NaT -> None."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | pd.Index | pd.Series):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return value.total_seconds()
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _split_array_text(text: bytes) -> EncodedColumn:
    """orjson's text of a numeric array, ``[v0,v1,...]``: no value holds a comma, so commas split it."""
    body = np.frombuffer(text, dtype=np.uint8)[1:-1]
    commas = np.flatnonzero(body == _COMMA)
    starts = np.empty(len(commas) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = commas + 1
    ends = np.empty(len(commas) + 1, dtype=np.int64)
    ends[:-1] = commas
    ends[-1] = len(body)
    return EncodedColumn(body, starts, ends)


def _from_values(values: list[Any]) -> EncodedColumn:
    """Each distinct value encoded once (text columns hold a few: sides, exit reasons)."""
    tokens: list[bytes] = []
    token_of: dict[tuple[type, Any], int] = {}
    codes = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        hashable = isinstance(value, str | int | float | bool | type(None))
        key = (type(value), value)
        code = token_of.get(key) if hashable else None
        if code is None:
            code = len(tokens)
            tokens.append(orjson.dumps(jsonable(value)))
            if hashable:
                token_of[key] = code
        codes[row] = code
    return _from_codes(codes, tokens)


def _from_codes(codes: npt.NDArray[np.int64], tokens: list[bytes]) -> EncodedColumn:
    """Row ``i`` holds ``tokens[codes[i]]``."""
    lengths = np.fromiter((len(token) for token in tokens), dtype=np.int64, count=len(tokens))
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    text = np.frombuffer(b"".join(tokens), dtype=np.uint8)
    return EncodedColumn(text, offsets[:-1][codes], offsets[1:][codes])


def _from_utc_times(values: np.ndarray) -> EncodedColumn:
    """ISO-8601 strings like `Timestamp.isoformat()` for UTC (``"...+00:00"``) at the coarsest unit that
    keeps every time of the column exact, ``null`` for NaT: one byte matrix, a row per time."""
    stamps: npt.NDArray[np.datetime64] = values.astype("datetime64[ns]")
    ns = stamps.view(np.int64)
    valid = ~np.isnat(stamps)
    unit: Literal["s", "us", "ns"] = "ns"
    units: tuple[tuple[Literal["s", "us"], int], ...] = (("s", 1_000_000_000), ("us", 1_000))
    for candidate, size in units:
        if not np.any(ns[valid] % size):
            unit = candidate
            break
    digits = {"s": 0, "us": 6, "ns": 9}[unit]
    if not valid.any():
        return _from_values([None] * len(ns))
    matrix = _utc_text(ns, digits)  # NaT rows hold garbage: they point at the null below
    token = matrix.shape[1]
    flat = np.concatenate((matrix.reshape(-1), np.frombuffer(_NULL, dtype=np.uint8)))
    starts = np.arange(len(ns), dtype=np.int64) * token
    ends = starts + token
    starts[~valid], ends[~valid] = len(flat) - len(_NULL), len(flat)
    return EncodedColumn(flat, starts, ends)


@numba.njit(cache=True, nogil=True)
def _utc_text(ns: np.ndarray, digits: int) -> np.ndarray:  # pragma: no cover - compiled
    """``"YYYY-MM-DDTHH:MM:SS[.fraction]+00:00"`` for each epoch-nanosecond time (years 1000-9999), the
    fraction of ``digits`` digits (0, 6 or 9): what `numpy.datetime_as_string` and the suffix make.
    Nanosecond times span 1677-2262: the year always has four digits."""
    width = 19 + (digits + 1 if digits else 0)
    out = np.empty((len(ns), width + 8), dtype=np.uint8)
    for row in range(len(ns)):
        seconds, nanos = ns[row] // 1_000_000_000, ns[row] % 1_000_000_000
        days, second = seconds // 86_400, seconds % 86_400
        # The civil date of a day number (H. Hinnant's days_from_civil, inverted).
        z = days + 719_468
        era = z // 146_097
        doe = z - era * 146_097
        yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        day = doy - (153 * mp + 2) // 5 + 1
        month = mp + 3 if mp < 10 else mp - 9
        year = yoe + era * 400 + (1 if month <= 2 else 0)
        line = out[row]
        line[0] = 34  # '"'
        for at, value, size in (
            (1, year, 4),
            (6, month, 2),
            (9, day, 2),
            (12, second // 3_600, 2),
            (15, second // 60 % 60, 2),
            (18, second % 60, 2),
        ):
            for k in range(size - 1, -1, -1):
                line[at + k] = 48 + value % 10
                value //= 10
        line[5] = line[8] = 45  # '-'
        line[11] = 84  # 'T'
        line[14] = line[17] = 58  # ':'
        if digits:
            line[20] = 46  # '.'
            fraction = nanos // 10 ** (9 - digits)
            for k in range(digits - 1, -1, -1):
                line[21 + k] = 48 + fraction % 10
                fraction //= 10
        for k, char in enumerate(b"+00:00"):
            line[width + 1 + k] = char
        line[width + 7] = 34
    return out


def _from_text(column: pd.Series) -> EncodedColumn:
    """A column of strings (and None): pandas' hashing finds the distinct values, each encoded once."""
    codes, distinct = pd.factorize(column, use_na_sentinel=False)
    return _from_codes(codes.astype(np.int64, copy=False), [orjson.dumps(jsonable(v)) for v in distinct])


def _encode(column: pd.Series) -> EncodedColumn:
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return _from_utc_times(column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy())
    if pd.api.types.is_datetime64_dtype(dtype):
        return _from_utc_times(column.to_numpy())
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        # orjson writes NaN and inf as null, as it does for a float in a dict.
        return _split_array_text(
            orjson.dumps(np.ascontiguousarray(column.to_numpy()), option=orjson.OPT_SERIALIZE_NUMPY)
        )
    if pd.api.types.infer_dtype(column, skipna=True) in ("string", "empty"):
        return _from_text(column)
    return _from_values(column.tolist())


@numba.njit(cache=True, nogil=True)
def _interleave(  # pragma: no cover - compiled
    texts: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    fixed: np.ndarray,
    fixed_at: np.ndarray,
    first: int,
    out: np.ndarray,
) -> tuple[int, int]:
    """From row ``first`` on, as many whole rows as fit in ``out``: for each column its fixed text
    (``fixed[fixed_at[c]:fixed_at[c + 1]]``) and the row's value, then the row's closing text; a comma
    before every row but the very first. Returns (bytes written, next row)."""
    columns, rows = starts.shape
    constant = fixed_at[columns + 1] - fixed_at[0] + 1
    at = 0
    r = first
    while r < rows:
        size = constant
        for c in range(columns):
            size += ends[c, r] - starts[c, r]
        if at + size > len(out):
            break
        if r:
            out[at] = 44  # ","
            at += 1
        for c in range(columns + 1):
            for i in range(fixed_at[c], fixed_at[c + 1]):
                out[at] = fixed[i]
                at += 1
            if c < columns:
                for i in range(starts[c, r], ends[c, r]):
                    out[at] = texts[i]
                    at += 1
        r += 1
    return at, r


# The text is made and handed out this much at a time: one buffer that stays in the cache and is
# written again and again, where one buffer for the whole text (89 MB for 193,602 trades) is first
# touched page by page.
_CHUNK_BYTES = 1 << 22


def rows_json(table: pd.DataFrame, *, indent: bool, depth: int = 1) -> bytes:
    """``table`` as a JSON array of one object per row, exactly as `orjson.dumps` writes the list of
    ``dict(zip(columns, row))`` (with `orjson.OPT_INDENT_2` when ``indent``, the array being the value
    of a key ``depth`` levels down); times as UTC ISO-8601 strings, NaN, inf and NaT as null."""
    return b"".join(rows_json_parts(table, indent=indent, depth=depth))


def rows_json_parts(table: pd.DataFrame, *, indent: bool, depth: int = 1) -> Iterator[bytes]:
    """`rows_json` in pieces of a few MB, made as they are written."""
    rows = len(table)
    if rows == 0:
        yield b"[]"
        return
    keys = [orjson.dumps(str(name)) for name in table.columns]
    if indent:
        outer, inner = b"\n" + b"  " * (depth + 1), b"\n" + b"  " * (depth + 2)
        fixed = [outer + b"{" + inner + keys[0] + b": ", *(b"," + inner + key + b": " for key in keys[1:])]
        fixed.append(outer + b"}")
        tail = b"\n" + b"  " * depth + b"]"
    else:
        fixed = [b"{" + keys[0] + b":", *(b"," + key + b":" for key in keys[1:]), b"}"]
        tail = b"]"
    encoded = [_encode(table[name]) for name in table.columns]
    offsets = np.cumsum([0, *(len(column.text) for column in encoded)])
    texts = np.concatenate([column.text for column in encoded])
    starts = np.stack([column.starts + offset for column, offset in zip(encoded, offsets, strict=False)])
    ends = np.stack([column.ends + offset for column, offset in zip(encoded, offsets, strict=False)])
    fixed_at = np.cumsum([0, *(len(text) for text in fixed)]).astype(np.int64)
    fixed_text = np.frombuffer(b"".join(fixed), dtype=np.uint8)
    longest = int(fixed_at[-1] + 1 + (ends - starts).sum(axis=0).max())
    out = np.empty(max(_CHUNK_BYTES, longest), dtype=np.uint8)
    yield b"["
    row = 0
    while row < rows:
        written, row = _interleave(texts, starts, ends, fixed_text, fixed_at, row, out)
        yield out[:written].tobytes()
    yield tail
