"""Backtest reports: JSON, rich terminal tables and matplotlib PNG charts.

JSON is encoded by orjson; the trades by `jsonrows` from the trade table's column arrays (no dict per
trade), the same bytes orjson writes for the dicts. rich and matplotlib are imported by the
functions that use them: `tradebot backtest --json` never loads either.

Charts use the object-oriented matplotlib API (`Figure` + `FigureCanvasAgg`), so no display and no
pyplot global state are involved: nothing is registered with pyplot, and each figure is cleared after
it is saved.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from tradebot.backtest.jsonrows import jsonable as _jsonable
from tradebot.backtest.jsonrows import rows_json_parts
from tradebot.backtest.metrics import drawdown_series

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "MAX_PLOT_POINTS",
    "STAT_GROUPS",
    "format_cell",
    "plot_equity_drawdown",
    "plot_price_with_trades",
    "plot_sweep_heatmap",
    "print_report",
    "print_table",
    "render_stats_table",
    "result_to_json",
]

MAX_PLOT_POINTS = 5_000

# Metric groups of the terminal report, in display order; unknown keys go to "other".
STAT_GROUPS: dict[str, tuple[str, ...]] = {
    "period": ("start", "end", "duration_days", "bars", "bars_per_year"),
    "returns": (
        "equity_final",
        "equity_peak",
        "total_return_pct",
        "cagr_pct",
        "buy_hold_return_pct",
    ),
    "risk": (
        "volatility_ann_pct",
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown_pct",
        "max_drawdown_duration_bars",
        "max_drawdown_duration_days",
    ),
    "trades": (
        "n_trades",
        "win_rate_pct",
        "profit_factor",
        "avg_win",
        "avg_loss",
        "avg_trade_pct",
        "best_trade_pct",
        "worst_trade_pct",
        "expectancy",
        "exposure_pct",
        "commissions",
    ),
}

# ------------------------------------------------------------------------------------------------- JSON


def result_json_parts(
    stats: Mapping[str, Any], trades: pd.DataFrame, params: Mapping[str, Any], *, indent: bool = True
) -> Iterator[bytes]:
    """`result_json` in pieces of a few MB, made as they are written (`tradebot backtest --json`)."""
    # The trades are encoded on their own (`rows_json_parts`) and go in the place of a marker no value
    # can hold (orjson writes a string's quote inside a value as an escaped quote).
    marker = "trades-" + os.urandom(16).hex()
    payload = {"stats": _jsonable(stats), "trades": marker, "params": _jsonable(params)}
    document = orjson.dumps(payload, option=orjson.OPT_INDENT_2 if indent else 0)
    head, tail = document.split(orjson.dumps(marker), 1)
    yield head
    yield from rows_json_parts(trades, indent=indent, depth=1)
    yield tail


def result_json(
    stats: Mapping[str, Any], trades: pd.DataFrame, params: Mapping[str, Any], *, indent: bool = True
) -> bytes:
    """One JSON object ``{"stats": {...}, "trades": [...], "params": {...}}`` as UTF-8 bytes; always
    valid JSON (NaN, inf and NaT are null)."""
    return b"".join(result_json_parts(stats, trades, params, indent=indent))


def result_to_json(stats: Mapping[str, Any], trades: pd.DataFrame, params: Mapping[str, Any]) -> str:
    """`result_json` as text."""
    return result_json(stats, trades, params).decode()


# ----------------------------------------------------------------------------------------------- tables


def _label(key: str) -> str:
    text = key.removesuffix("_pct").replace("_", " ")
    return text[:1].upper() + text[1:] + (" [%]" if key.endswith("_pct") else "")


# Columns and statistics that count things: shown as integers whatever their dtype (a sweep's table is
# float where a numpy array made it so; `47.000 trades` reads as a measurement).
COUNT_KEYS = frozenset(
    {"bars", "n_trades", "fold", "short_window", "long_window", "cooldown_bars", "entry_bar", "exit_bar"}
)
COUNT_SUFFIXES = ("_bars", "_trades")
RATIO_KEYS = ("sharpe", "sortino", "calmar", "profit_factor")  # unitless: three decimals


def is_count(key: str) -> bool:
    return key in COUNT_KEYS or key.endswith(COUNT_SUFFIXES)


def format_cell(key: str, value: Any) -> str:
    """One value of a result table as text: counts as integers (`1,234`), ratios with three decimals,
    quantities as integers when whole, days in whole days, times as `YYYY-MM-DD HH:MM` (UTC), other numbers
    with thousands separators and two decimals; missing and non-finite values as `—`."""
    if value is None:
        return "—"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            return "—"
        if is_count(key) or (key in {"qty", "duration_days"} and number.is_integer()):
            return f"{round(number):,}"
        if key.endswith(RATIO_KEYS):
            return f"{number:.3f}"
        if key == "qty":
            return f"{number:,.6f}".rstrip("0")
        if key == "duration_days":
            return f"{number:,.1f}"
        return f"{number:,.2f}"
    return str(value)


def print_table(console: Console, table: Table) -> None:
    """Prints `table` at the width its content needs (at least the console's): rich would otherwise
    squeeze its columns into an 80-column pipe or terminal and cut every number to `61…`."""
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update(max_width=100_000), table).maximum
    width = console.width
    console.width = max(width, needed)  # `print(width=)` is capped at the console's width
    try:
        console.print(table)
    finally:
        console.width = width


def render_stats_table(stats: Mapping[str, Any]) -> Table:
    """The statistics as a two-column rich table, grouped into period, returns, risk and trades."""
    from rich.table import Table

    table = Table(title="Backtest statistics", show_header=True, header_style="bold")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    known = {key for keys in STAT_GROUPS.values() for key in keys}
    groups: list[tuple[str, list[str]]] = [
        (name, [key for key in keys if key in stats]) for name, keys in STAT_GROUPS.items()
    ]
    groups.append(("other", [key for key in stats if key not in known]))
    first = True
    for name, keys in groups:
        if not keys:
            continue
        if not first:
            table.add_section()
        first = False
        table.add_row(f"[bold cyan]{name.capitalize()}[/]", "")
        for key in keys:
            table.add_row(f"  {_label(key)}", format_cell(key, stats[key]))
    return table


def render_trades_table(trades: pd.DataFrame, last: int = 10) -> Table:
    """The last ``last`` trades as a rich table."""
    from rich.table import Table

    shown = trades.tail(last)
    table = Table(title=f"Last {len(shown)} of {len(trades)} trades", header_style="bold")
    columns = [
        c
        for c in (
            "entry_time",
            "exit_time",
            "side",
            "qty",
            "entry_price",
            "exit_price",
            "pnl",
            "return_pct",
            "exit_reason",
        )
        if c in shown.columns
    ]
    for col in columns:
        table.add_column(_label(col), justify="left" if col in {"side", "exit_reason"} else "right")
    for row in shown[columns].itertuples(index=False, name=None):
        cells: list[str] = []
        for col, value in zip(columns, row, strict=True):
            if col == "pnl" and isinstance(value, float | np.floating) and math.isfinite(value):
                colour = "green" if value > 0 else "red" if value < 0 else "white"
                cells.append(f"[{colour}]{float(value):,.2f}[/]")
            else:
                cells.append(format_cell(col, value))
        table.add_row(*cells)
    return table


def print_report(
    stats: Mapping[str, Any],
    trades: pd.DataFrame,
    console: Console | None = None,
    *,
    setup: str | None = None,
) -> None:
    """Print the statistics table and the last 10 trades, under `setup` (the timeframe, the fill model and
    the exit rule: what decides how the same data trades) when given."""
    from rich.console import Console

    out = console if console is not None else Console()
    if setup:
        out.print(setup, markup=False)
    print_table(out, render_stats_table(stats))
    if len(trades):
        print_table(out, render_trades_table(trades))
    else:
        out.print("[dim]no trades[/]")


# ------------------------------------------------------------------------------------------------ plots


def _naive_utc(values: pd.DatetimeIndex | pd.Series | np.ndarray) -> np.ndarray:
    """datetime64[ns] in UTC without tz, which matplotlib plots natively."""
    idx = pd.DatetimeIndex(values)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx.to_numpy(dtype="datetime64[ns]")


def _downsample_positions(values: np.ndarray, max_points: int = MAX_PLOT_POINTS) -> np.ndarray:
    """Positions to plot: all of them for short series, else each bucket's min and max (plus ends)."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2 - 1)
    size = math.ceil(n / buckets)
    whole = (n // size) * size
    filled = np.where(np.isnan(values), np.nanmean(values) if np.isfinite(values).any() else 0.0, values)
    blocks = filled[:whole].reshape(-1, size)
    offsets = np.arange(0, whole, size)
    picks = [offsets + blocks.argmin(axis=1), offsets + blocks.argmax(axis=1), np.array([0, n - 1])]
    if whole < n:
        tail = filled[whole:]
        picks.append(np.array([whole + int(tail.argmin()), whole + int(tail.argmax())]))
    return np.unique(np.concatenate(picks))


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, format="png", dpi=110)
    finally:
        fig.clear()
    return out


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_price_with_trades(
    path: str | Path,
    index: pd.DatetimeIndex,
    close: np.ndarray,
    short_ma: np.ndarray | None,
    long_ma: np.ndarray | None,
    trades: pd.DataFrame,
    setup: str | None = None,
) -> Path:
    """Price with both moving averages and trade markers (`setup` under the title); long series are downsampled for the lines
    (bucket min/max of the price) while trade markers stay at their exact times and prices."""
    x = _naive_utc(index)
    px = np.asarray(close, dtype=np.float64)
    fig = _new_figure(12, 6)
    ax = fig.add_subplot(1, 1, 1)
    if len(px):
        pos = _downsample_positions(px)
        ax.plot(x[pos], px[pos], color="0.35", linewidth=0.8, label="close")
        step = max(1, math.ceil(len(px) / MAX_PLOT_POINTS))
        for values, colour, name in ((short_ma, "tab:blue", "short MA"), (long_ma, "tab:orange", "long MA")):
            if values is not None and len(values) == len(px):
                ma = np.asarray(values, dtype=np.float64)
                ax.plot(x[::step], ma[::step], color=colour, linewidth=1.0, label=name)

    if len(trades):
        side = trades["side"].astype(str).to_numpy()
        reason = trades["exit_reason"].astype(str).str.lower().to_numpy()
        entry_x = _naive_utc(trades["entry_time"])
        exit_x = _naive_utc(trades["exit_time"])
        entry_px = trades["entry_price"].to_numpy(dtype=np.float64)
        exit_px = trades["exit_price"].to_numpy(dtype=np.float64)
        longs = side == "long"
        shorts = side == "short"
        stops = np.char.find(reason.astype(str), "stop") >= 0
        marker_specs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, str, str]] = [
            (longs, entry_x, entry_px, "^", "tab:green", "long entry"),
            (shorts, entry_x, entry_px, "v", "tab:red", "short entry"),
            (~stops, exit_x, exit_px, "x", "black", "exit"),
            (stops, exit_x, exit_px, "D", "magenta", "stop-out"),
        ]
        for mask, xs, ys, marker, colour, name in marker_specs:
            if mask.any():
                ax.scatter(xs[mask], ys[mask], marker=marker, color=colour, s=40, zorder=3, label=name)
    ax.set_title("Price, moving averages and trades" + (f"\n{setup}" if setup else ""))
    ax.set_ylabel("price")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def plot_equity_drawdown(
    path: str | Path,
    index: pd.DatetimeIndex,
    equity: np.ndarray,
    buy_hold: np.ndarray | None = None,
) -> Path:
    """Two panels sharing the time axis: equity (and a buy & hold equity curve), drawdown % filled."""
    x = _naive_utc(index)
    eq = np.asarray(equity, dtype=np.float64)
    dd = drawdown_series(eq) * 100.0
    fig = _new_figure(12, 7)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    if len(eq):
        pos = _downsample_positions(eq)
        top.plot(x[pos], eq[pos], color="tab:blue", linewidth=1.0, label="strategy")
        if buy_hold is not None and len(buy_hold) == len(eq):
            bh = np.asarray(buy_hold, dtype=np.float64)
            bh_pos = _downsample_positions(bh)
            top.plot(x[bh_pos], bh[bh_pos], color="0.5", linewidth=1.0, label="buy & hold")
        dd_pos = _downsample_positions(dd)
        bottom.fill_between(x[dd_pos], dd[dd_pos], 0.0, color="tab:red", alpha=0.4, linewidth=0)
        bottom.plot(x[dd_pos], dd[dd_pos], color="tab:red", linewidth=0.6)
        top.legend(loc="best", fontsize="small")
    top.set_title("Equity and drawdown")
    top.set_ylabel("equity")
    bottom.set_ylabel("drawdown [%]")
    top.grid(True, alpha=0.3)
    bottom.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_sweep_heatmap(path: str | Path, table: pd.DataFrame, x: str, y: str, metric: str) -> Path:
    """Heatmap of ``metric`` over the ``x`` x ``y`` parameter grid (mean where a pair repeats).

    Missing pairs and NaN results are left blank; cells are annotated when the grid is small enough
    to read, and the colourbar is labelled with the metric.
    """
    for col in (x, y, metric):
        if col not in table.columns:
            raise KeyError(f"column {col!r} not in the sweep table (columns: {list(table.columns)})")
    values = pd.to_numeric(table[metric], errors="coerce")
    frame = pd.DataFrame({"x": table[x].to_numpy(), "y": table[y].to_numpy(), "v": values.to_numpy()})
    grid = frame.pivot_table(index="y", columns="x", values="v", aggfunc="mean", dropna=False)
    grid = grid.sort_index().sort_index(axis=1)
    data = grid.to_numpy(dtype=np.float64)

    fig = _new_figure(max(6.0, 0.6 * data.shape[1] + 3), max(4.5, 0.45 * data.shape[0] + 2))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("white")
    # imshow leaves NaN cells in the colormap's "bad" colour, transparent by default: blank cells.
    image = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label(metric)
    ax.set_xticks(np.arange(data.shape[1]), [str(v) for v in grid.columns], rotation=45, ha="right")
    ax.set_yticks(np.arange(data.shape[0]), [str(v) for v in grid.index])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{metric} by {x} x {y}")
    if data.size and data.shape[0] <= 30 and data.shape[1] <= 30:
        finite = data[np.isfinite(data)]
        mid = float((finite.min() + finite.max()) / 2) if finite.size else 0.0
        for (row, col), value in np.ndenumerate(data):
            if math.isfinite(value):
                colour = "black" if value > mid else "white"
                ax.text(col, row, f"{value:.3g}", ha="center", va="center", fontsize=7, color=colour)
    return _save(fig, path)


def plot_walk_forward(path: str | Path, table: pd.DataFrame, metric: str) -> Path:
    """In-sample against out-of-sample ``metric`` per walk-forward fold, side by side: a wide gap is
    overfitting made visible. Each fold is labelled with its test window's first day."""
    in_sample, out_of_sample = f"in_sample_{metric}", f"out_of_sample_{metric}"
    for col in (in_sample, out_of_sample, "fold", "test_start"):
        if col not in table.columns:
            raise KeyError(f"column {col!r} not in the walk-forward table (columns: {list(table.columns)})")
    folds = np.arange(len(table))
    fig = _new_figure(max(6.0, 0.5 * len(table) + 3), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.4
    ins = pd.to_numeric(table[in_sample], errors="coerce").to_numpy(dtype=np.float64)
    outs = pd.to_numeric(table[out_of_sample], errors="coerce").to_numpy(dtype=np.float64)
    ax.bar(folds - width / 2, ins, width, label="in sample (training window)", color="#1f77b4")
    ax.bar(folds + width / 2, outs, width, label="out of sample (test window)", color="#ff7f0e")
    ax.axhline(0.0, color="black", linewidth=0.8)
    labels = [
        f"{fold}\n{pd.Timestamp(start):%Y-%m-%d}"
        for fold, start in zip(table["fold"], table["test_start"], strict=True)
    ]
    ax.set_xticks(folds, labels, fontsize=8)
    ax.set_xlabel("fold (test window start, UTC)")
    ax.set_ylabel(metric)
    ax.set_title(f"walk-forward: {metric} in and out of sample")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
