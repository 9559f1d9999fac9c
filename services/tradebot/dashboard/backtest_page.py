"""The Backtest page: pick or upload an OHLCV CSV, set the strategy's parameters, run one backtest
(metrics, price with trades, equity and drawdown) or sweep short x long windows (ranked table, heatmap).

Runs `tradebot.backtest` in-process; it never talks to the live pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError
from streamlit.delta_generator import DeltaGenerator

from tradebot.backtest.cliargs import FILL_HELP, FILL_HELP_COMMON, TIMEFRAME_HELP
from tradebot.backtest.data import (
    AUTO,
    DataError,
    MarketData,
    ResolvedTimeframe,
    at_timeframe,
    load_market_data,
    resolve_timeframe,
)
from tradebot.backtest.engine import FILL_MODELS, BacktestConfig
from tradebot.backtest.report import RATIO_KEYS, is_count
from tradebot.backtest.result import BacktestResult, run_market_data
from tradebot.backtest.sweep import RANK_METRICS, SweepResult, parse_range, run_sweep
from tradebot.core.bars import TICK, TIMEFRAMES
from tradebot.core.costs import Costs
from tradebot.core.params import SIZING_KINDS, Sizing, StrategyParams
from tradebot.dashboard.common import load_dashboard_settings
from tradebot.dashboard.live import duration_text
from tradebot.dashboard.settings import DashboardSettings

RESULT_KEY = "bt_result"
SWEEP_KEY = "bt_sweep"
MAX_CHART_POINTS = 3000
MAX_SWEEP_COMBOS = 20_000
SOURCE_FOLDER = "a CSV in the data folder"
SOURCE_UPLOAD = "upload a CSV"
MB = 1024 * 1024  # Streamlit's maxUploadSize counts in these
HEADLINE = (
    ("total return", "total_return_pct"),
    ("sharpe", "sharpe"),
    ("max drawdown", "max_drawdown_pct"),
    ("trades", "n_trades"),
    ("win rate", "win_rate_pct"),
)


# -- data ---------------------------------------------------------------------------------------------
@st.cache_data(show_spinner="Loading the CSV…", max_entries=8)
def _load_file(path: str, mtime_ns: int, size: int) -> tuple[MarketData | None, str | None]:
    del mtime_ns, size  # part of the cache key only
    try:
        return load_market_data(path), None
    except DataError as exc:
        return None, str(exc)


@st.cache_data(show_spinner="Loading the upload…", max_entries=4)
def _load_upload(name: str, digest: str, content: bytes) -> tuple[MarketData | None, str | None]:
    """Saves the upload to a temporary file, loads it, and names the upload (not the temp file) in errors."""
    del digest  # the cache key; hashing the bytes is Streamlit's job too, but this keeps it cheap
    safe_name = Path(name).name or "upload.csv"
    with tempfile.TemporaryDirectory(prefix="tradebot-upload-") as folder:
        path = Path(folder) / safe_name
        path.write_bytes(content)
        try:
            return load_market_data(path), None
        except DataError as exc:
            return None, str(exc).replace(str(path), safe_name)


def csv_files(data_dir: str) -> list[Path]:
    folder = Path(data_dir)
    return sorted(p for p in folder.glob("*.csv") if p.is_file()) if folder.is_dir() else []


def choose_data(settings: DashboardSettings) -> tuple[MarketData | None, str]:
    """The bars or ticks to test and what they are called; None (with the reason shown) when there are
    none."""
    source = st.radio("Data", [SOURCE_FOLDER, SOURCE_UPLOAD], key="bt_source", horizontal=True)
    if source == SOURCE_UPLOAD:
        upload = st.file_uploader("OHLCV CSV", type=["csv"], key="bt_upload")
        if upload is None:
            st.info("Upload a CSV with timestamp, open, high, low, close (and volume) columns.")
            return None, ""
        if upload.size > settings.upload_max_mb * MB:
            st.error(
                f"{upload.name} is {upload.size / MB:,.1f} MB: uploads are limited to {settings.upload_max_mb} MB "
                "(TRADEBOT_UPLOAD_MAX_MB), to fit the dashboard's memory. Use fewer rows, or put the file in "
                "the data folder (TRADEBOT_DATA_DIR)."
            )
            return None, upload.name
        content = upload.getvalue()
        data, error = _load_upload(upload.name, hashlib.sha256(content).hexdigest(), content)
        label = upload.name
    else:
        files = csv_files(settings.data_dir)
        if not files:
            st.info(
                f"No CSV files in {Path(settings.data_dir).resolve()} (TRADEBOT_DATA_DIR); upload one instead."
            )
            return None, ""
        chosen = st.selectbox("CSV file", [str(p) for p in files], key="bt_file")
        path = Path(str(chosen))
        stat = path.stat()
        data, error = _load_file(str(path), stat.st_mtime_ns, stat.st_size)
        label = path.name
    if error is not None or data is None:
        st.error(f"Cannot use this data: {error}")
        return None, label
    first, last = (pd.Timestamp(int(data.ts[i]), unit="ns") for i in (0, -1))
    st.caption(
        f"{label}: {len(data):,} {data.kind} from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} (UTC)"
    )
    return data, label


# -- parameters ---------------------------------------------------------------------------------------
# Every widget starts at the model's own default and is bounded by the model's own constraints.
DEFAULTS = BacktestConfig(params=StrategyParams())


def _optional(value: float) -> float | None:
    return float(value) if value and value > 0 else None


def _bounds(model: type[BaseModel], name: str) -> tuple[float | None, float | None]:
    """(min, max) of a number input from the field's constraints. An exclusive bound becomes the widget's
    bound (the model still refuses the value itself, with a message naming the field)."""
    low: float | None = None
    high: float | None = None
    for constraint in model.model_fields[name].metadata:
        match constraint:
            case Ge(ge=int() | float() as bound) | Gt(gt=int() | float() as bound):
                low = float(bound)
            case Le(le=int() | float() as bound) | Lt(lt=int() | float() as bound):
                high = float(bound)
    return low, high


def _int_input(column: DeltaGenerator, label: str, model: type[BaseModel], name: str, key: str) -> int:
    low, high = _bounds(model, name)
    default = model.model_fields[name].default
    return column.number_input(
        label,
        min_value=None if low is None else int(low),
        max_value=None if high is None else int(high),
        value=int(default),
        step=1,
        key=key,
    )


def _float_input(
    column: DeltaGenerator, label: str, model: type[BaseModel], name: str, key: str, *, step: float
) -> float:
    """A number input for `model.name`, at its default (an optional percent's None is 0 = off)."""
    low, high = _bounds(model, name)
    default = model.model_fields[name].default
    return column.number_input(
        label,
        min_value=low,
        max_value=high,
        value=float(default or 0.0),
        step=step,
        key=key,
    )


def choose_timeframe(column: DeltaGenerator, data: MarketData | None) -> ResolvedTimeframe:
    """The timeframe widget, `auto` first (the CLI's default), resolved against the data as the CLI does."""
    choices = [AUTO, *TIMEFRAMES]
    choice = column.selectbox("Timeframe", choices, index=0, key="bt_timeframe", help=TIMEFRAME_HELP)
    if data is None:
        return ResolvedTimeframe(TICK if choice == AUTO else str(choice), str(choice))
    resolved = resolve_timeframe(data, str(choice))
    if resolved.warning is not None:
        st.warning(resolved.warning)
    return resolved


def choose_config(data: MarketData | None) -> tuple[BacktestConfig, ResolvedTimeframe] | None:
    """The parameters from the widgets, on the timeframe resolved against `data`; None (with the validation
    error shown) when they do not fit."""
    c1, c2, c3, c4 = st.columns(4)
    ma_types = ["sma", "ema"]
    ma_type = c1.selectbox(
        "Moving average", ma_types, index=ma_types.index(DEFAULTS.params.ma_type), key="bt_ma"
    )
    short_window = _int_input(c2, "Short window", StrategyParams, "short_window", "bt_short")
    long_window = _int_input(c3, "Long window", StrategyParams, "long_window", "bt_long")
    fill = c4.selectbox(
        "Fill model",
        list(FILL_MODELS),
        index=list(FILL_MODELS).index(DEFAULTS.fill),
        key="bt_fill",
        help="\n\n".join([*(f"**{mode}**: {text}" for mode, text in FILL_HELP.items()), FILL_HELP_COMMON]),
    )
    c1, c2, c3, c4 = st.columns(4)
    stop = _float_input(c1, "Stop-loss % (0 = off)", StrategyParams, "stop_loss_pct", "bt_stop", step=0.5)
    take = _float_input(c2, "Take-profit % (0 = off)", StrategyParams, "take_profit_pct", "bt_take", step=0.5)
    trail = _float_input(
        c3, "Trailing stop % (0 = off)", StrategyParams, "trailing_stop_pct", "bt_trail", step=0.5
    )
    allow_short = c4.checkbox("Allow short", value=DEFAULTS.params.allow_short, key="bt_short_selling")
    c1, c2, c3, c4 = st.columns(4)
    sizing_kind = c1.selectbox(
        "Sizing", list(SIZING_KINDS), index=SIZING_KINDS.index(DEFAULTS.params.sizing.kind), key="bt_sizing"
    )
    value_low, _ = _bounds(Sizing, "value")
    # Empty until typed: the default sizing (all-in) takes no value, so there is no default to show.
    sizing_value = c2.number_input(
        "Sizing value", min_value=value_low, value=None, step=1.0, key="bt_sizing_value",
        disabled=sizing_kind == "all-in", help="quantity, currency amount or percent, by sizing kind",
    )  # fmt: skip
    qty_step = _float_input(
        c3, "Quantity step (0 = fractional)", StrategyParams, "qty_step", "bt_qty_step", step=1.0
    )
    initial_cash = c4.number_input(
        "Initial cash", min_value=1.0, value=DEFAULTS.initial_cash, step=1_000.0, key="bt_cash"
    )
    c1, c2, c3, c4 = st.columns(4)
    timeframe = choose_timeframe(c4, data)
    commission_pct = _float_input(c1, "Commission %", Costs, "commission_pct", "bt_commission", step=0.01)
    commission_fixed = _float_input(c2, "Fixed fee per fill", Costs, "commission_fixed", "bt_fee", step=0.5)
    slippage_bps = _float_input(c3, "Slippage (bps)", Costs, "slippage_bps", "bt_slippage", step=1.0)
    try:
        params = StrategyParams(
            ma_type=ma_type,
            short_window=int(short_window),
            long_window=int(long_window),
            stop_loss_pct=_optional(stop),
            take_profit_pct=_optional(take),
            trailing_stop_pct=_optional(trail),
            allow_short=bool(allow_short),
            sizing={"kind": sizing_kind}
            if sizing_kind == "all-in"
            else {"kind": sizing_kind, "value": sizing_value},
            qty_step=float(qty_step),
            timeframe=timeframe.timeframe,
        )
        costs = Costs(
            commission_pct=commission_pct, commission_fixed=commission_fixed, slippage_bps=slippage_bps
        )
    except ValidationError as exc:
        st.error("Invalid parameters: " + _validation_text(exc))
        return None
    config = BacktestConfig(
        params=params,
        costs=costs,
        initial_cash=float(initial_cash),
        fill="next-open" if fill == "next-open" else "close",
    )
    return config, timeframe


def _validation_text(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


# -- charts -------------------------------------------------------------------------------------------
def _step(n: int) -> int:
    return max(1, -(-n // MAX_CHART_POINTS))


def price_chart(result: BacktestResult) -> alt.LayerChart:
    index = result.raw.index
    step = _step(len(index))
    params = result.config.params
    short_label = f"{params.ma_type.upper()} {params.short_window}"
    long_label = f"{params.ma_type.upper()} {params.long_window}"
    lines = pd.DataFrame(
        {
            "ts": index[::step],
            "close": result.close[::step],
            short_label: result.raw.short_ma[::step],
            long_label: result.raw.long_ma[::step],
        }
    ).melt(id_vars="ts", var_name="series", value_name="value")
    lines = lines.dropna(subset=["value"])
    line = (
        alt.Chart(lines)
        .mark_line()
        .encode(
            x=alt.X("ts:T", title=None),
            y=alt.Y("value:Q", title="price", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "series:N",
                scale=alt.Scale(
                    domain=["close", short_label, long_label], range=["#555555", "#1f77b4", "#ff7f0e"]
                ),
            ),
            tooltip=[alt.Tooltip("ts:T"), "series:N", alt.Tooltip("value:Q", format=".4f")],
        )
    )
    marks = trade_markers(result.trades)
    points = (
        alt.Chart(marks)
        .mark_point(filled=True, size=70, opacity=0.9)
        .encode(
            x="ts:T",
            y="price:Q",
            shape=alt.Shape("kind:N", title="trades", scale=alt.Scale(
                domain=["long entry", "short entry", "exit", "stop-out"], range=["triangle-up", "triangle-down", "cross", "diamond"]
            )),
            color=alt.Color("kind:N", title="trades", scale=alt.Scale(
                domain=["long entry", "short entry", "exit", "stop-out"], range=["#2ca02c", "#d62728", "#111111", "#e377c2"]
            )),
            tooltip=[alt.Tooltip("ts:T"), "kind:N", alt.Tooltip("price:Q", format=".4f"), "reason:N"],
        )
    )  # fmt: skip
    chart: alt.LayerChart = alt.layer(line, points).resolve_scale(color="independent", shape="independent")
    return chart.properties(height=380)


def trade_markers(trades: pd.DataFrame) -> pd.DataFrame:
    if trades.empty:
        return pd.DataFrame(columns=["ts", "price", "kind", "reason"])
    entries = pd.DataFrame(
        {
            "ts": trades["entry_time"],
            "price": trades["entry_price"],
            "kind": np.where(trades["side"] == "long", "long entry", "short entry"),
            "reason": trades["side"].astype(str),
        }
    )
    reasons = trades["exit_reason"].astype(str)
    exits = pd.DataFrame(
        {
            "ts": trades["exit_time"],
            "price": trades["exit_price"],
            "kind": np.where(reasons.str.contains("stop"), "stop-out", "exit"),
            "reason": reasons,
        }
    )
    return pd.concat([entries, exits], ignore_index=True)


def equity_charts(result: BacktestResult) -> tuple[alt.Chart, alt.Chart]:
    index = result.raw.index
    equity = np.asarray(result.raw.equity, dtype=np.float64)
    peak = np.maximum.accumulate(equity) if len(equity) else equity
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, equity / peak - 1.0, 0.0) * 100.0
    buy_hold = (
        result.config.initial_cash * result.close / result.close[0] if len(result.close) else result.close
    )
    step = _step(len(index))
    frame = pd.DataFrame({"ts": index[::step], "strategy": equity[::step], "buy & hold": buy_hold[::step]})
    curves = (
        alt.Chart(frame.melt(id_vars="ts", var_name="series", value_name="equity"))
        .mark_line()
        .encode(
            x=alt.X("ts:T", title=None),
            # Whole currency amounts: Vega's default SI format shows a flat curve near 10,000 as ".500 .500".
            y=alt.Y("equity:Q", scale=alt.Scale(zero=False), axis=alt.Axis(format=",.2f")),
            color=alt.Color(
                "series:N", scale=alt.Scale(domain=["strategy", "buy & hold"], range=["#1f77b4", "#999999"])
            ),
            tooltip=[alt.Tooltip("ts:T"), "series:N", alt.Tooltip("equity:Q", format=",.2f")],
        )
        .properties(height=280)
    )
    dd = pd.DataFrame({"ts": index[::step], "drawdown_pct": drawdown[::step]})
    area = (
        alt.Chart(dd)
        .mark_area(color="#d62728", opacity=0.4, line={"color": "#d62728"})
        .encode(
            x=alt.X("ts:T", title=None),
            y=alt.Y("drawdown_pct:Q", title="drawdown %"),
            tooltip=[alt.Tooltip("ts:T"), alt.Tooltip("drawdown_pct:Q", format=".2f")],
        )
        .properties(height=150)
    )
    return curves, area


def heatmap(table: pd.DataFrame, metric: str) -> alt.LayerChart | alt.FacetChart:
    frame = table[["short_window", "long_window", metric]].copy()
    frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    base = alt.Chart(frame).encode(
        x=alt.X("short_window:O", title="short window"),
        y=alt.Y("long_window:O", title="long window", sort="descending"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(f"{metric}:Q", title=metric, scale=alt.Scale(scheme="viridis")),
        tooltip=["short_window:O", "long_window:O", alt.Tooltip(f"{metric}:Q", format=".3f")],
    )
    layers: list[alt.Chart] = [cells]
    if len(frame) <= 400:
        layers.append(
            base.mark_text(fontSize=10, color="white").encode(text=alt.Text(f"{metric}:Q", format=".2f"))
        )
    return alt.layer(*layers).properties(height=max(220, 24 * frame["long_window"].nunique()))


# -- results ------------------------------------------------------------------------------------------
def readable_days(days: float) -> str:
    """`3,116 days (8.5 years)`, `12 days`, `1.5 days`, `04:30:00`: a duration in days as a trader reads it."""
    if days < 1.0:
        return duration_text(days * 86_400.0)
    text = f"{days:,.0f} days" if float(days).is_integer() else f"{days:,.1f} days"
    return text + (f" ({days / 365.25:.1f} years)" if days >= 365.0 else "")


def format_stat(key: str, value: Any) -> str:
    """One backtest statistic as text: counts as integers, percentages with two decimals and `%`, ratios
    with three decimals, durations in days (and years), amounts of money with thousands separators and two
    decimals, times in UTC; missing and non-finite values as `-`."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if isinstance(value, str):
        stamp = pd.Timestamp(value) if key in {"start", "end"} else None
        return f"{stamp:%Y-%m-%d %H:%M} UTC" if stamp is not None else value
    number = float(value)
    if not np.isfinite(number):
        return "-"
    if is_count(key):
        return f"{round(number):,}"
    if key.endswith("_pct"):
        return f"{number:,.2f}%"
    if key.endswith(RATIO_KEYS):
        return f"{number:.3f}"
    if key.endswith("_days"):
        return readable_days(number)
    if key == "bars_per_year":
        return f"{number:,.0f}" if number.is_integer() else f"{number:,.2f}"
    return f"{number:,.2f}"


def stats_table(stats: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"metric": list(stats), "value": [format_stat(k, v) for k, v in stats.items()]})


def number_formats(columns: Sequence[str]) -> dict[str, str]:
    """printf formats (Streamlit's `NumberColumn`, `,` for thousands) for the numeric columns of the trades
    and sweep tables: counts as integers, percentages with `%`, ratios with three decimals, the rest (prices,
    money) with two decimals. The columns stay numbers, so the tables still sort."""
    formats = {}
    for column in columns:
        if is_count(column):
            formats[column] = "%,d"
        elif column.endswith("_pct"):
            formats[column] = "%,.2f%%"
        elif column.endswith(RATIO_KEYS):
            formats[column] = "%.3f"
        elif column == "qty":
            formats[column] = "%,.6g"
        else:
            formats[column] = "%,.2f"
    return formats


def number_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """`column_config` for `frame`: its numeric columns formatted by `number_formats`, its times in UTC."""
    numeric = [
        str(c) for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool
    ]
    config: dict[str, Any] = {
        column: st.column_config.NumberColumn(format=fmt) for column, fmt in number_formats(numeric).items()
    }
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            config[str(column)] = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", timezone="UTC")
    return config


def show_result(result: BacktestResult, label: str) -> None:
    stats = result.stats
    st.subheader(f"Result: {label}")
    st.caption(result.setup_line())
    st.caption(" ".join(result.config.params.to_cli_args()) + f" --fill={result.config.fill}")
    for col, (name, key) in zip(st.columns(len(HEADLINE)), HEADLINE, strict=True):
        col.metric(name, format_stat(key, stats.get(key)))
    left, right = st.columns([1, 3])
    with left:
        st.dataframe(stats_table(stats), hide_index=True, width="stretch", height=560)
    with right:
        st.altair_chart(price_chart(result), width="stretch")
        curves, area = equity_charts(result)
        st.altair_chart(curves, width="stretch")
        st.altair_chart(area, width="stretch")
    with st.expander(f"Trades ({len(result.trades)})"):
        trades = result.trades
        st.dataframe(trades, hide_index=True, width="stretch", column_config=number_columns(trades))


def sweep_section(bars: pd.DataFrame | None, config: BacktestConfig | None) -> None:
    st.header("Sweep")
    st.caption(
        "Every short x long window pair over the parameters above, ranked by a metric (higher is better)."
    )
    c1, c2, c3 = st.columns(3)
    short_text = c1.text_input(
        "Short windows",
        value="5:30:5",
        key="bt_sweep_short",
        help="START:STOP:STEP (inclusive) or a comma list",
    )
    long_text = c2.text_input(
        "Long windows",
        value="20:100:10",
        key="bt_sweep_long",
        help="START:STOP:STEP (inclusive) or a comma list",
    )
    metric = c3.selectbox("Rank by", list(RANK_METRICS), key="bt_sweep_metric")
    if st.button("Run sweep", key="bt_sweep_run", disabled=bars is None or config is None):
        assert bars is not None
        assert config is not None
        try:
            shorts = parse_range(short_text, int)
            longs = parse_range(long_text, int)
        except ValueError as exc:
            st.error(str(exc))
            shorts, longs = [], []
        if shorts and longs:
            if len(shorts) * len(longs) > MAX_SWEEP_COMBOS:
                st.error(
                    f"{len(shorts) * len(longs):,} combinations is too many here (at most {MAX_SWEEP_COMBOS:,}); use `tradebot sweep`."
                )
            else:
                bar = st.progress(0.0, text="sweeping…")

                def progress(done: int, total: int) -> None:
                    bar.progress(done / total if total else 1.0, text=f"{done:,} / {total:,} combinations")

                sweep = run_sweep(
                    bars,
                    config,
                    {"short_window": shorts, "long_window": longs},
                    metric=str(metric),
                    progress=progress,
                )
                bar.progress(1.0, text=f"done: {len(sweep.table):,} combinations")
                st.session_state[SWEEP_KEY] = sweep
    sweep_result: SweepResult | None = st.session_state.get(SWEEP_KEY)
    if sweep_result is None:
        return
    table = sweep_result.table
    if table.empty:
        st.warning("No valid combination: every short window must be below its long window.")
        return
    st.caption(
        f"{len(table):,} combinations over {sweep_result.bars:,} bars, ranked by {sweep_result.metric}"
        + (f"; {sweep_result.invalid} invalid pairs skipped (short >= long)" if sweep_result.invalid else "")
    )
    left, right = st.columns([3, 2])
    with left:
        top = table.head(100)
        st.dataframe(top, hide_index=True, width="stretch", column_config=number_columns(top))
    with right:
        st.altair_chart(heatmap(table, sweep_result.metric), width="stretch")


# -- page ---------------------------------------------------------------------------------------------
def render() -> None:
    st.title("Backtest")
    settings = load_dashboard_settings()
    if settings is None:
        return
    data, label = choose_data(settings)
    st.header("Parameters")
    chosen = choose_config(data)
    config, bars, why = None, None, None
    if chosen is not None and data is not None:
        config, timeframe = chosen
        why = timeframe.why
        try:
            bars = at_timeframe(data, config.params.timeframe, label)
        except DataError as exc:
            st.error(f"Cannot use this timeframe: {exc}")
    if st.button("Run backtest", key="bt_run", type="primary", disabled=bars is None or config is None):
        assert data is not None
        assert bars is not None
        assert config is not None
        with st.spinner("Backtesting…"):
            result = run_market_data(data, bars, config)
            result = dataclasses.replace(result, timeframe_why=why)
            st.session_state[RESULT_KEY] = (result, label)
    stored = st.session_state.get(RESULT_KEY)
    if stored is not None:
        show_result(*stored)
    sweep_section(None if bars is None else bars.frame(), config)


if __name__ == "__main__":
    render()
