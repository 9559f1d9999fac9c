"""The Live page's candlestick chart: a strategy's bars in its timeframe, its two moving averages, volume
beneath and its fills as markers, zoomable, over a chosen window of the newest bars.

`candle_view` shapes the data (pure, unit-tested): the moving averages come from the loaded bars' closes
through `tradebot.core.indicators.MovingAverage`, the strategy's own code, so they are the values the
strategy computes on the same closes; each fill is drawn on the bar whose interval holds its time.
`candle_chart` draws it with Altair; every time axis is in 24-hour UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import altair as alt
import pandas as pd

from tradebot.core.bars import bucket_start, timeframe_ns
from tradebot.core.indicators import MovingAverage
from tradebot.core.models import ClosedBar, Fill, FillStatus
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import epoch_ns

# The window selector's choices: the newest N bars, or every loaded bar (None), by their label.
WINDOWS: dict[str, int | None] = {"last 100 bars": 100, "last 500 bars": 500, "all loaded bars": None}
# How many of the newest bars one request loads (the API's page size).
BARS_LOADED = 1000

ENTRY_KINDS = {"entry_long": "entry long", "entry_short": "entry short"}
STOP_KINDS = {"stop_loss": "stop-out", "trailing_stop": "stop-out", "force_exit": "force-exit"}
FILL_DOMAIN = ["entry long", "entry short", "exit", "stop-out", "force-exit"]
FILL_SHAPES = ["triangle-up", "triangle-down", "cross", "diamond", "circle"]
FILL_COLOURS = ["#2ca02c", "#d62728", "#111111", "#e377c2", "#9467bd"]
CANDLE_COLUMNS = [
    "ts",
    "end",
    "mid",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "short_ma",
    "long_ma",
    "rising",
]
MARK_COLUMNS = ["ts", "mid", "bar_ts", "price", "kind", "side", "qty", "reason"]


@dataclass(frozen=True)
class CandleView:
    """What the chart draws: `candles` (one row per shown bar, oldest first, with both moving averages),
    `marks` (one row per filled order on a shown bar) and the caption saying what is shown."""

    candles: pd.DataFrame
    marks: pd.DataFrame
    caption: str
    short_label: str
    long_label: str
    timeframe: str


def candle_view(
    bars: Sequence[ClosedBar],
    fills: Sequence[Fill],
    params: StrategyParams,
    window: int | None,
    *,
    more_in_store: bool = False,
) -> CandleView:
    """The newest `window` of `bars` (any order; None: all) with the strategy's moving averages over every
    loaded bar's close, and the filled `fills` inside the shown bars as markers. `more_in_store` (the API
    holds older bars than were loaded) is said in the caption, as is how many bars are shown of how many."""
    timeframe = params.timeframe
    length = timeframe_ns(timeframe)
    ordered = sorted(bars, key=lambda b: b.ts)
    kind: Literal["sma", "ema"] = params.ma_type
    short_ma, long_ma = MovingAverage(kind, params.short_window), MovingAverage(kind, params.long_window)
    rows = [
        {
            "ts": bar.ts, "open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close,
            "volume": bar.volume, "short_ma": short_ma.update(bar.close), "long_ma": long_ma.update(bar.close),
        }
        for bar in ordered
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=[c for c in CANDLE_COLUMNS if c not in ("end", "mid", "rising")])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["end"] = frame["ts"] + pd.Timedelta(length, unit="ns")
    frame["mid"] = frame["ts"] + pd.Timedelta(length // 2, unit="ns")
    frame["rising"] = frame["close"] >= frame["open"]
    shown = frame if window is None else frame.tail(window)
    shown = shown.reset_index(drop=True)[CANDLE_COLUMNS]

    starts = {int(ts.value) for ts in shown["ts"]}
    mark_rows = []
    for fill in fills:
        if fill.status is not FillStatus.FILLED:
            continue
        start = bucket_start(epoch_ns(fill.ts), length)
        if start not in starts:
            continue
        reason = fill.reason.value
        mark_rows.append(
            {
                "ts": fill.ts, "mid": pd.Timestamp(start + length // 2, unit="ns", tz="UTC"),
                "bar_ts": pd.Timestamp(start, unit="ns", tz="UTC"), "price": fill.price,
                "kind": ENTRY_KINDS.get(reason) or STOP_KINDS.get(reason) or "exit",
                "side": fill.side.value, "qty": fill.qty, "reason": reason,
            }
        )  # fmt: skip
    marks = pd.DataFrame(mark_rows, columns=MARK_COLUMNS)
    marks["ts"] = pd.to_datetime(marks["ts"], utc=True)

    caption = f"{timeframe} bars: showing {len(shown)} of {len(frame)} loaded"
    if window is not None and len(frame) > window:
        caption += f" (the last {window})"
    if more_in_store:
        caption += f"; the API holds older bars than the newest {len(frame)} loaded"
    caption += (
        f"; {params.ma_type.upper()} {params.short_window}/{params.long_window} over the loaded closes"
        f"; {len(marks)} fills; times in UTC"
    )
    prefix = params.ma_type.upper()
    return CandleView(
        shown, marks, caption, f"{prefix} {params.short_window}", f"{prefix} {params.long_window}", timeframe
    )


def time_format(timeframe: str) -> str:
    """Axis labels in 24-hour UTC, as precise as the bars: days, minutes or seconds."""
    length = timeframe_ns(timeframe)
    if length % 86_400_000_000_000 == 0:
        return "%Y-%m-%d"
    if length % 60_000_000_000 == 0:
        return "%m-%d %H:%M"
    return "%H:%M:%S"


def utc_x(field: str, label_format: str, *, title: str | None = "UTC") -> alt.X:
    """A time axis in UTC (Vega's default labels are local time with 12-hour clocks)."""
    # A label expression: the chart's theme overrode `format`, and Vega's default labels are `01 AM`.
    return alt.X(
        f"{field}:T",
        title=title,
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(labelExpr=f"utcFormat(datum.value, '{label_format}')", labelAngle=0, labelOverlap=True),
    )


def candle_chart(view: CandleView) -> alt.VConcatChart:
    """Candles (high-low wick, open-close body, green rising, red falling) with both moving averages and
    the fill markers; volume beneath on the same (shared) time scale, so dragging to pan or wheeling to zoom
    the candles moves both panels."""
    label_format = time_format(view.timeframe)
    zoom = alt.selection_interval(name="zoom", bind="scales", encodings=["x"])
    colour = alt.condition("datum.rising", alt.value("#2ca02c"), alt.value("#d62728"))
    when = alt.Tooltip("ts:T", title="open (UTC)", format="%Y-%m-%d %H:%M:%S", formatType="utc")
    candles = alt.Chart(view.candles)
    tooltip = [when, "open:Q", "high:Q", "low:Q", "close:Q", alt.Tooltip("volume:Q", format=",.0f")]
    wick = candles.mark_rule().encode(
        x=utc_x("mid", label_format, title=None),
        y=alt.Y("low:Q", title="price", scale=alt.Scale(zero=False)),
        y2="high:Q",
        color=colour,
        tooltip=tooltip,
    )
    # The outline keeps a bar of one price (open = close, a replay's one tick per bar) a visible line.
    body = candles.mark_bar(strokeWidth=1).encode(
        x="ts:T", x2="end:T", y="open:Q", y2="close:Q", color=colour, stroke=colour, tooltip=tooltip
    )
    averages = (
        candles.transform_calculate(**{view.short_label: "datum.short_ma", view.long_label: "datum.long_ma"})
        .transform_fold([view.short_label, view.long_label], as_=["series", "value"])
        .transform_filter("isValid(datum.value) && isFinite(datum.value)")
        .mark_line()
        .encode(
            x="mid:T",
            y="value:Q",
            color=alt.Color(
                "series:N",
                title="moving averages",
                scale=alt.Scale(domain=[view.short_label, view.long_label], range=["#1f77b4", "#ff7f0e"]),
            ),
            tooltip=[when, "series:N", alt.Tooltip("value:Q", format=".4f")],
        )
    )
    fills = (
        alt.Chart(view.marks)
        .mark_point(filled=True, size=110, opacity=0.95, stroke="#000000", strokeWidth=0.5)
        .encode(
            x="mid:T",
            y="price:Q",
            shape=alt.Shape("kind:N", title="fills", scale=alt.Scale(domain=FILL_DOMAIN, range=FILL_SHAPES)),
            fill=alt.Fill("kind:N", title="fills", scale=alt.Scale(domain=FILL_DOMAIN, range=FILL_COLOURS)),
            tooltip=[
                alt.Tooltip("ts:T", title="filled (UTC)", format="%Y-%m-%d %H:%M:%S", formatType="utc"),
                "kind:N",
                "side:N",
                "qty:Q",
                alt.Tooltip("price:Q", format=".4f"),
                "reason:N",
            ],
        )
    )
    price = (
        alt.layer(wick, body, averages, fills)
        .resolve_scale(color="independent", shape="independent", fill="independent")
        .add_params(zoom)
        .properties(height=320)
    )
    volume = (
        candles.mark_bar(opacity=0.6)
        .encode(
            x=utc_x("ts", label_format),
            x2="end:T",
            y=alt.Y("volume:Q", title="volume", axis=alt.Axis(format="~s")),
            y2=alt.datum(0),  # from zero: a bar ranged in x is otherwise a point in y
            color=colour,
            tooltip=tooltip,
        )
        .properties(height=110)
    )
    chart: alt.VConcatChart = alt.vconcat(price, volume).resolve_scale(x="shared")
    return chart
