"""The wire format between a sweep shard (a pod of the operator's Indexed Job, `tradebot sweep --shard-index`)
and the operator that merges the shards: here once, so the writer and the reader cannot drift.

A shard ranks its slice of the grid (combination k goes to shard k % n) and reports:
- its best rows as the termination message (`encode_shard_result`), which Kubernetes cuts at 4096 bytes:
  compact (column names once, rows as lists) and checked against that bound;
- its whole slice as JSON lines on stdout (`table_lines`), one object per combination, read back from the
  pod's log by the operator (`parse_table_lines`) for the full table.
Every row carries `combination`, its index in the whole grid: ranking the merged rows by (metric descending,
missing last, combination ascending) gives exactly the order of the unsharded `tradebot sweep` (a stable
sort of the grid's order by the metric).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Metrics a sweep can rank by (`tradebot sweep --metric`, a TradingStrategy's backtest.sweep.metric); for every
# one of them, higher is better.
RANK_METRICS = (
    "sharpe",
    "sortino",
    "total_return_pct",
    "cagr_pct",
    "calmar",
    "max_drawdown_pct",
    "win_rate_pct",
    "profit_factor",
    "n_trades",
)
COMBINATION = "combination"
# Kubernetes keeps at most this many bytes of a termination message.
MAX_MESSAGE_BYTES = 4096
MAX_TOP = 10

Row = dict[str, Any]


def plain(value: Any) -> Any:
    """A JSON-able scalar: numpy scalars as Python ones, NaN and infinities as None (JSON has none)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class ShardResult:
    """One shard's report: its best rows (ranked), how many combinations it ran, and the grid's invalid count."""

    metric: str
    shard: int
    shards: int
    combinations: int
    invalid: int
    top: list[Row]


def encode_shard_result(result: ShardResult) -> str:
    """The termination message: compact JSON within MAX_MESSAGE_BYTES (rows from the end are dropped if a
    row were ever too wide; with MAX_TOP rows of the sweepable parameters it always fits, see the tests)."""
    columns = list(result.top[0]) if result.top else []
    rows = [[plain(row.get(column)) for column in columns] for row in result.top]
    while True:
        text = json.dumps(
            {
                "metric": result.metric,
                "shard": result.shard,
                "shards": result.shards,
                "combinations": result.combinations,
                "invalid": result.invalid,
                "columns": columns,
                "top": rows,
            },
            separators=(",", ":"),
            allow_nan=False,
        )
        if len(text.encode()) <= MAX_MESSAGE_BYTES or not rows:
            return text
        rows = rows[:-1]


def decode_shard_result(message: str) -> ShardResult:
    """A shard's termination message; ValueError if it is not one."""
    try:
        payload = json.loads(message)
        columns = [str(column) for column in payload["columns"]]
        top = [dict(zip(columns, values, strict=True)) for values in payload["top"]]
        result = ShardResult(
            metric=str(payload["metric"]),
            shard=int(payload["shard"]),
            shards=int(payload["shards"]),
            combinations=int(payload["combinations"]),
            invalid=int(payload["invalid"]),
            top=top,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a sweep shard result: {exc}") from None
    if any(COMBINATION not in row for row in top):
        raise ValueError(f"not a sweep shard result: a row has no {COMBINATION}")
    return result


def table_lines(rows: Iterable[Mapping[str, Any]]) -> str:
    """A shard's whole table as JSON lines (what it prints on stdout)."""
    return "".join(
        json.dumps({key: plain(value) for key, value in row.items()}, separators=(",", ":"), allow_nan=False)
        + "\n"
        for row in rows
    )


def parse_table_lines(text: str) -> list[Row]:
    """The rows in a shard pod's log; other lines (warnings on stderr share the log) are skipped."""
    rows: list[Row] = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and COMBINATION in row:
            rows.append(row)
    return rows


def _rank_key(metric: str) -> Any:
    def key(row: Mapping[str, Any]) -> tuple[bool, float, int]:
        value = row.get(metric)
        number = math.nan if value is None else float(value)
        missing = math.isnan(number)
        return (missing, 0.0 if missing else -number, int(row[COMBINATION]))

    return key


def merge_rows(shards: Iterable[Iterable[Mapping[str, Any]]], metric: str) -> list[Row]:
    """The shards' rows as one table, ranked as the unsharded sweep ranks them; a combination reported twice
    (a retried pod) counts once."""
    seen: dict[int, Row] = {}
    for rows in shards:
        for row in rows:
            seen.setdefault(int(row[COMBINATION]), dict(row))
    return sorted(seen.values(), key=_rank_key(metric))


def table_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The merged table as `tradebot sweep --csv` writes it: the columns without `combination`, floats in
    full precision, a missing value empty."""
    if not rows:
        return ""
    columns = [column for column in rows[0] if column != COMBINATION]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            ["" if plain(row.get(column)) is None else plain(row.get(column)) for column in columns]
        )
    return out.getvalue()
