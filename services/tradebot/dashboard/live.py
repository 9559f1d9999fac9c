"""The Live page: at the top the summary (per strategy and in total: equity, P&L in currency and percent,
drawdown, trade statistics) and the open trades with force-exit and close-all; then the closed trades,
profit per symbol and per day, prices with the strategy's moving averages and its trades, orders, fills,
positions, the equity marked at every price and its drawdown, and each strategy's parameters with halt/resume.

Everything comes from the tradebot HTTP API. The data parts are fragments that refresh every
`refresh_seconds` on their own, so the page never reloads and the selectors (kept in
`st.session_state`) survive every refresh. An unreachable or failing API shows an error banner in the
part that needs it and is retried on the next refresh.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Literal

import altair as alt
import pandas as pd
import streamlit as st
from pydantic import BaseModel

from tradebot.core.bars import TICK
from tradebot.core.cockpit import MarkedPoint, Summary, Trades
from tradebot.core.indicators import MovingAverage
from tradebot.core.models import Fill, FillStatus, OrderRequest
from tradebot.core.params import StrategyParams
from tradebot.core.views import BarPage, EquityPoint, FillPage, OrderPage, StrategyInfo, SymbolActivity
from tradebot.dashboard.candles import BARS_LOADED, WINDOWS, candle_chart, candle_view, utc_x
from tradebot.dashboard.client import ApiClient, ApiUnavailable
from tradebot.dashboard.common import TOKEN_KEY, api_token, client, load_dashboard_settings, show_api_error
from tradebot.dashboard.settings import DashboardSettings

ALL = "__all__"
STRATEGY_KEY = "live_strategy"
SYMBOL_KEY = "live_symbol"
FLASH_KEY = "live_flash"
EXIT_FLASH_KEY = "live_exit_flash"
KNOWN_KEY = "live_known_strategies"
BAR_WINDOW_KEY = "live_bar_window"
TABLE_ROWS = 200
PRICE_POINTS = 2000
MARKER_ORDERS = 1000

# Order reasons as chart markers.
MARKER_KINDS: dict[str, str] = {
    "entry_long": "entry long",
    "entry_short": "entry short",
    "exit_cross": "exit",
    "take_profit": "exit",
    "stop_loss": "stop-out",
    "trailing_stop": "stop-out",
    "force_exit": "force-exit",
}
MARKER_DOMAIN = ["entry long", "entry short", "exit", "stop-out", "force-exit", "rejected"]
MARKER_SHAPES = ["triangle-up", "triangle-down", "cross", "diamond", "circle", "square"]
MARKER_COLOURS = ["#2ca02c", "#d62728", "#111111", "#e377c2", "#9467bd", "#7f7f7f"]

ORDER_COLUMNS = ["ts", "strategy_id", "symbol", "side", "qty", "reason", "ref_price", "id", "cause"]
FILL_COLUMNS = [
    "ts", "strategy_id", "symbol", "side", "qty", "price", "commission", "status", "reason",
    "reject_reason", "order_id",
]  # fmt: skip
OPEN_TRADE_COLUMNS = [
    "strategy_id", "symbol", "side", "qty", "entry_ts", "entry_price", "last_price", "unrealized_pnl",
    "unrealized_pct", "duration", "stop_loss", "take_profit", "trailing_stop",
]  # fmt: skip
CLOSED_TRADE_COLUMNS = [
    "exit_ts", "strategy_id", "symbol", "side", "qty", "entry_ts", "entry_price", "exit_price", "exit_reason",
    "pnl", "pnl_pct", "duration",
]  # fmt: skip
EVENT_COLUMNS = ["ts", "strategy_id", "kind", "symbol", "message", "order_id"]
EVENT_ROWS = 100
SUMMARY_COLUMNS = [
    "strategy_id", "equity", "pnl", "pnl_pct", "realized_pnl", "realized_pct", "unrealized_pnl",
    "unrealized_pct", "today_pnl", "exposure", "max_drawdown_pct", "trades", "win_rate_pct", "profit_factor",
]  # fmt: skip
POSITION_COLUMNS = [
    "strategy_id", "symbol", "qty", "avg_price", "last_price", "realized_pnl", "unrealized_pnl", "commissions",
]  # fmt: skip


# -- pure helpers (unit-testable) ---------------------------------------------------------------------
def moving_averages(
    prices: Sequence[float], kind: str, short_window: int, long_window: int
) -> tuple[list[float], list[float]]:
    """The strategy's short and long moving averages over `prices` (NaN until a window is full)."""
    ma_kind: Literal["sma", "ema"] = "ema" if kind == "ema" else "sma"
    short, long_ = MovingAverage(ma_kind, short_window), MovingAverage(ma_kind, long_window)
    return [short.update(p) for p in prices], [long_.update(p) for p in prices]


def table(items: Sequence[BaseModel], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame([item.model_dump(mode="json") for item in items])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    present = [c for c in columns if c in frame.columns]
    frame = frame[present].copy()
    if "ts" in frame.columns:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601", errors="coerce")
    return frame


def markers(orders: Sequence[OrderRequest], fills: Sequence[Fill]) -> pd.DataFrame:
    """One marker per order at its time: entries, exits and stop-outs; at the fill price when filled."""
    by_order = {f.order_id: f for f in fills}
    rows = []
    for order in orders:
        fill = by_order.get(order.id)
        status = fill.status.value if fill else "pending"
        kind = "rejected" if status == "rejected" else MARKER_KINDS.get(order.reason.value, "exit")
        price = fill.price if fill and fill.status is FillStatus.FILLED else order.ref_price
        rows.append(
            {
                "ts": order.ts, "price": price, "kind": kind, "side": order.side.value,
                "qty": order.qty, "reason": order.reason.value, "status": status,
            }
        )  # fmt: skip
    frame = pd.DataFrame(rows, columns=["ts", "price", "kind", "side", "qty", "reason", "status"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["price"] = pd.to_numeric(frame["price"])
    return frame


def duration_text(seconds: float) -> str:
    """`3d 04:05:06`, `04:05:06`: a trade's duration as a trader reads it."""
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


def trade_table(items: Sequence[BaseModel], columns: list[str], times: Sequence[str]) -> pd.DataFrame:
    """A trades table: times in UTC, durations as text."""
    frame = pd.DataFrame([item.model_dump(mode="json") for item in items])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["duration"] = frame["duration_s"].map(duration_text)
    for column in times:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601").dt.strftime(
            "%Y-%m-%d %H:%M:%S"
        )
    return frame[[c for c in columns if c in frame.columns]]


def summary_table(rows: Sequence[Summary]) -> pd.DataFrame:
    return table(rows, SUMMARY_COLUMNS).round(2)


def command_id(*parts: str) -> str:
    """An idempotency key for a force-exit or close-all button: the same trade (strategy, symbol and entry
    time) gives the same key, so a double click or a retry closes it once and never a later trade."""
    return "ui-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def equity_frame(points: Sequence[EquityPoint | MarkedPoint], strategy_id: str) -> pd.DataFrame:
    """Equity (marked at every price) and its drawdown (percent below the running peak)."""
    frame = pd.DataFrame([(p.ts, p.equity) for p in points], columns=["ts", "equity"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    frame["equity"] = pd.to_numeric(frame["equity"])
    peak = frame["equity"].cummax()
    frame["drawdown_pct"] = (frame["equity"] / peak - 1.0).where(peak > 0, 0.0) * 100.0
    frame["fill_no"] = range(1, len(frame) + 1)
    frame["strategy"] = strategy_id
    return frame


def describe_params(params: StrategyParams) -> str:
    parts = [f"{params.ma_type.upper()} {params.short_window}/{params.long_window}"]
    for value, label in (
        (params.stop_loss_pct, "stop"),
        (params.take_profit_pct, "take-profit"),
        (params.trailing_stop_pct, "trailing"),
    ):
        if value is not None:
            parts.append(f"{label} {value:g}%")
    if params.allow_short:
        parts.append("shorts")
    parts.append(f"sizing {params.sizing}")
    return ", ".join(parts)


# -- charts -------------------------------------------------------------------------------------------
def price_chart(
    prices: pd.DataFrame, marks: pd.DataFrame, short_label: str, long_label: str
) -> alt.LayerChart:
    lines = prices.rename(columns={"short_ma": short_label, "long_ma": long_label}).melt(
        id_vars="ts", value_vars=["price", short_label, long_label], var_name="series", value_name="value"
    )
    lines = lines.dropna(subset=["value"])
    line = (
        alt.Chart(lines)
        .mark_line(interpolate="linear", point=len(prices) < 3)
        .encode(
            x=utc_x("ts", "%m-%d %H:%M", title="UTC"),
            y=alt.Y("value:Q", title="price", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "series:N",
                title="series",
                scale=alt.Scale(
                    domain=["price", short_label, long_label], range=["#555555", "#1f77b4", "#ff7f0e"]
                ),
            ),
            tooltip=[
                alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M:%S", formatType="utc"),
                "series:N",
                alt.Tooltip("value:Q", format=".4f"),
            ],
        )
    )
    points = (
        alt.Chart(marks)
        .mark_point(filled=True, size=90, opacity=0.9)
        .encode(
            x="ts:T",
            y="price:Q",
            shape=alt.Shape(
                "kind:N", title="orders", scale=alt.Scale(domain=MARKER_DOMAIN, range=MARKER_SHAPES)
            ),
            color=alt.Color(
                "kind:N", title="orders", scale=alt.Scale(domain=MARKER_DOMAIN, range=MARKER_COLOURS)
            ),
            tooltip=[
                alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M:%S", formatType="utc"),
                "kind:N",
                "side:N",
                "qty:Q",
                alt.Tooltip("price:Q", format=".4f"),
                "reason:N",
                "status:N",
            ],
        )
    )
    chart: alt.LayerChart = alt.layer(line, points).resolve_scale(color="independent", shape="independent")
    return chart.properties(height=320)


def equity_charts(frame: pd.DataFrame) -> tuple[alt.Chart, alt.Chart]:
    # Equity points are stamped when each fill was booked; in a fast replay many share a time, so the
    # x axis is the fill number unless every point has its own time.
    by_time = frame["ts"].is_unique and len(frame) > 1
    x = alt.X("ts:T", title=None) if by_time else alt.X("fill_no:Q", title="fill #")
    tooltip = ["strategy:N", alt.Tooltip("ts:T", format="%Y-%m-%d %H:%M:%S", formatType="utc"), "fill_no:Q"]
    equity = (
        alt.Chart(frame)
        .mark_line(point=len(frame) < 3)
        .encode(
            x=x,
            # Currency amounts: Vega's default SI format shows a flat curve near 10,000 as ".500 .500".
            y=alt.Y("equity:Q", title="equity", scale=alt.Scale(zero=False), axis=alt.Axis(format=",.2f")),
            color=alt.Color("strategy:N", title="strategy"),
            tooltip=[*tooltip, alt.Tooltip("equity:Q", format=",.2f")],
        )
        .properties(height=240)
    )
    drawdown = (
        alt.Chart(frame)
        .mark_area(opacity=0.4, line=True)
        .encode(
            x=x,
            y=alt.Y("drawdown_pct:Q", title="drawdown %"),
            color=alt.Color("strategy:N", title="strategy"),
            tooltip=[*tooltip, alt.Tooltip("drawdown_pct:Q", format=".2f")],
        )
        .properties(height=140)
    )
    return equity, drawdown


# -- state --------------------------------------------------------------------------------------------
def _selected(key: str) -> str | None:
    value = st.session_state.get(key)
    return None if value in (None, ALL) else str(value)


def _flash(kind: str, text: str, key: str = FLASH_KEY) -> None:
    st.session_state[key] = (kind, text)


def _control(action: str, strategy_id: str, api_url: str, token: str, timeout: float) -> None:
    """Halt/resume button callback: runs before the rerun, so the rerun shows the new state."""
    try:
        with ApiClient(api_url, token=token, timeout=timeout) as api:
            if action == "halt":
                api.halt(strategy_id)
            else:
                api.resume(strategy_id)
    except ApiUnavailable as exc:
        _flash("error", f"Could not {action} {strategy_id}: {exc.message}")
        return
    _flash("success", f"{strategy_id} {'halted: no new entries' if action == 'halt' else 'resumed'}")


def _exit(strategy_id: str, symbol: str | None, key: str, api_url: str, token: str, timeout: float) -> None:
    """Force-exit (one symbol) or close-all (`symbol` None) button callback."""
    what = f"{strategy_id} {symbol}" if symbol else f"every open trade of {strategy_id}"
    try:
        with ApiClient(api_url, token=token, timeout=timeout) as api:
            answer = api.force_exit(strategy_id, symbol, key) if symbol else api.close_all(strategy_id, key)
    except ApiUnavailable as exc:
        _flash("error", f"Could not force-exit {what}: {exc.message}", EXIT_FLASH_KEY)
        return
    sent = ", ".join(o.symbol for o in answer.orders) or "nothing was open"
    _flash("success", f"Force-exit of {what} sent ({sent}); it shows as closed once filled", EXIT_FLASH_KEY)


# -- fragments ----------------------------------------------------------------------------------------
def summary_panel(settings: DashboardSettings) -> None:
    """What a trader reads first: per strategy and in total, equity, P&L, drawdown and trade statistics."""
    strategy_id = _selected(STRATEGY_KEY)
    try:
        with client(settings) as api:
            data = api.summary()
    except ApiUnavailable as exc:
        show_api_error(exc, settings)
        return
    shown = next((row for row in data.items if row.strategy_id == strategy_id), data.total)
    label = shown.strategy_id if shown.strategy_id != "total" else "all strategies"
    st.caption(
        f"Summary of {label}; currency of the account, percent of the initial cash ({shown.initial_cash:,.2f})"
    )
    top = st.columns(5)
    top[0].metric("Equity", f"{shown.equity:,.2f}", f"{shown.pnl_pct:+.2f}%")
    top[1].metric("P&L", f"{shown.pnl:+,.2f}", f"{shown.pnl_pct:+.2f}%")
    top[2].metric("Realised", f"{shown.realized_pnl:+,.2f}", f"{shown.realized_pct:+.2f}%")
    top[3].metric("Unrealised", f"{shown.unrealized_pnl:+,.2f}", f"{shown.unrealized_pct:+.2f}%")
    top[4].metric("Today", f"{shown.today_pnl:+,.2f}")
    second = st.columns(5)
    second[0].metric("Open exposure", f"{shown.exposure:,.2f}")
    second[1].metric("Max drawdown", f"{shown.max_drawdown_pct:.2f}%")
    second[2].metric("Trades", f"{shown.trades}")
    second[3].metric("Win rate", "-" if shown.win_rate_pct is None else f"{shown.win_rate_pct:.1f}%")
    second[4].metric("Profit factor", "-" if shown.profit_factor is None else f"{shown.profit_factor:.2f}")
    st.dataframe(summary_table([*data.items, data.total]), hide_index=True, width="stretch")


def trades_panel(settings: DashboardSettings) -> None:
    """Open trades with force-exit and close-all; closed trades; profit per symbol and per day."""
    strategy_id = _selected(STRATEGY_KEY)
    symbol = _selected(SYMBOL_KEY)
    token = api_token(settings)
    flash = st.session_state.pop(EXIT_FLASH_KEY, None)
    # Containers keep the fragment's element count the same whatever is shown inside them (a changing
    # count left stale tables behind on a refresh).
    with st.container():
        if flash is not None:
            (st.success if flash[0] == "success" else st.error)(flash[1])
    try:
        with client(settings) as api:
            data: Trades = api.trades(strategy_id, symbol, limit=TABLE_ROWS)
    except ApiUnavailable as exc:
        show_api_error(exc, settings)
        return
    opened, closed = data.open, data.closed
    st.subheader("Open trades")
    with st.container():
        if not opened:
            st.info("No open trade" + _filter_text(strategy_id, symbol).replace(";", ":") + ".")
        else:
            st.dataframe(
                trade_table(opened, OPEN_TRADE_COLUMNS, ["entry_ts"]).round(4),
                hide_index=True,
                width="stretch",
            )
            common = {
                "timeout": settings.api_timeout_seconds,
                "token": token or "",
                "api_url": settings.api_url,
            }
            buttons = st.columns(min(len(opened), 6) + 1)
            for i, trade in enumerate(opened):
                key = command_id(trade.strategy_id, trade.symbol, trade.entry_ts.isoformat())
                buttons[i % (len(buttons) - 1)].button(
                    f"Force exit {trade.strategy_id} {trade.symbol}", key=f"exit-{trade.strategy_id}-{trade.symbol}",
                    disabled=token is None, on_click=_exit,
                    kwargs={"strategy_id": trade.strategy_id, "symbol": trade.symbol, "key": key, **common},
                    help="Close this trade at the last price" if token else "needs the API token",
                )  # fmt: skip
            # Close-all closes every symbol's trades, so it is offered only where they are all listed (its
            # command id is made of them: from a symbol's alone, two different books could share one).
            for sid in sorted({t.strategy_id for t in opened} if symbol is None else ()):
                mine = sorted(f"{t.symbol}@{t.entry_ts.isoformat()}" for t in opened if t.strategy_id == sid)
                buttons[-1].button(
                    f"Close all {sid}", key=f"close-all-{sid}", disabled=token is None, on_click=_exit,
                    kwargs={"strategy_id": sid, "symbol": None, "key": command_id(sid, *mine), **common},
                    help="Close every open trade of this strategy" if token else "needs the API token",
                )  # fmt: skip
    st.subheader("Closed trades")
    st.caption(f"newest {len(closed)} of {data.closed_total} first" + _filter_text(strategy_id, symbol))
    st.dataframe(
        trade_table(closed, CLOSED_TRADE_COLUMNS, ["exit_ts", "entry_ts"]).round(4),
        hide_index=True,
        width="stretch",
    )
    by_symbol, by_day = st.columns(2)
    with by_symbol:
        st.markdown("**Profit per symbol**")
        st.dataframe(
            table(data.by_symbol, ["strategy_id", "key", "trades", "pnl"]).rename(columns={"key": "symbol"}).round(2),
            hide_index=True, width="stretch",
        )  # fmt: skip
    with by_day:
        st.markdown("**Profit per day (UTC, by exit)**")
        st.dataframe(
            table(data.by_day, ["strategy_id", "key", "trades", "pnl"]).rename(columns={"key": "day"}).round(2),
            hide_index=True, width="stretch",
        )  # fmt: skip


def strategies_panel(settings: DashboardSettings) -> None:
    token = api_token(settings)
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash is not None:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    try:
        with client(settings) as api:
            strategies = api.strategies()
    except ApiUnavailable as exc:
        show_api_error(exc, settings)
        return
    ids = sorted(s.id for s in strategies)
    if ids != st.session_state.get(KNOWN_KEY):
        st.rerun()  # a strategy came or went: rebuild the selectors
    if token is None:
        st.caption(
            "Read-only: halt and resume need the API token, typed into the sidebar (kept for this browser "
            "session only). The buttons are disabled until then."
        )
    for strategy in sorted(strategies, key=lambda s: s.id):
        sid, halted, costs = strategy.id, strategy.halted, strategy.costs
        with st.container(border=True):
            name, info, halt, resume = st.columns([2, 6, 1, 1], vertical_alignment="center")
            name.markdown(f"**{sid}**  \n{':red[halted]' if halted else ':green[running]'}")
            info.markdown(
                f"{describe_params(strategy.params)}  \n"
                f"symbols {', '.join(strategy.symbols) or '-'}; initial cash {strategy.initial_cash:,.0f}; "
                f"commission {costs.commission_pct:g}%, slippage {costs.slippage_bps:g} bps"
            )
            common = {
                "timeout": settings.api_timeout_seconds,
                "token": token or "",
                "api_url": settings.api_url,
            }
            halt.button(
                "Halt", key=f"halt-{sid}", disabled=token is None or halted, on_click=_control,
                kwargs={"action": "halt", "strategy_id": sid, **common},
                help="Stop new entries (exits and stops still run)" if token else "needs the API token",
            )  # fmt: skip
            resume.button(
                "Resume", key=f"resume-{sid}", disabled=token is None or not halted, on_click=_control,
                kwargs={"action": "resume", "strategy_id": sid, **common},
                help="Allow entries again" if token else "needs the API token",
            )  # fmt: skip


def events_panel(settings: DashboardSettings) -> None:
    """The strategy's events, newest first: entries, exits, stop-outs, refusals, halts, force-exits."""
    strategy_id = _selected(STRATEGY_KEY)
    try:
        with client(settings) as api:
            events = api.events(strategy_id, limit=EVENT_ROWS)
    except ApiUnavailable as exc:
        show_api_error(exc, settings)
        return
    st.caption(f"newest {EVENT_ROWS} first" + _filter_text(strategy_id, None) + "; times in UTC")
    frame = table(events, EVENT_COLUMNS)
    if not frame.empty:
        frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S")
    st.dataframe(frame, hide_index=True, width="stretch")


def market_panel(
    settings: DashboardSettings, strategies: dict[str, StrategyInfo], symbols: list[str]
) -> None:
    """Per symbol: candles of the chosen strategy's timeframe when it trades bars and the API has them;
    otherwise the cached prices (the tick chart). Both with the moving averages and the trades."""
    strategy_id = _selected(STRATEGY_KEY)
    symbol = _selected(SYMBOL_KEY)
    strategy = strategies.get(strategy_id) if strategy_id else None
    shown = [symbol] if symbol else (strategy.symbols if strategy else symbols)
    params = strategy.params if strategy else None
    on_bars = params is not None and params.timeframe != TICK
    try:
        with client(settings) as api:
            # One request for every chart: each symbol's prices, orders and fills; bars one per symbol.
            data = api.market(shown, strategy_id, points=PRICE_POINTS, limit=MARKER_ORDERS)
            bars: dict[str, BarPage] = (
                {sym: api.bars(sym, params.timeframe, limit=BARS_LOADED) for sym in shown}
                if on_bars and params is not None
                else {}
            )
    except ApiUnavailable as exc:
        show_api_error(exc, settings)
        return
    if not data:
        st.info("No symbol to chart.")
    if on_bars:
        st.radio(
            "Candles shown", list(WINDOWS), index=0, key=BAR_WINDOW_KEY, horizontal=True,
            help="The newest bars drawn; drag the chart to pan and scroll to zoom",
        )  # fmt: skip
    for activity in data:
        page = bars.get(activity.symbol)
        if params is not None and page is not None and page.items:
            window = WINDOWS.get(st.session_state.get(BAR_WINDOW_KEY, ""), next(iter(WINDOWS.values())))
            view = candle_view(
                page.items, activity.fills, params, window, more_in_store=page.next_cursor is not None
            )
            st.markdown(f"**{activity.symbol}** — {params.timeframe} candles of {strategy_id}")
            st.altair_chart(candle_chart(view), width="stretch")
            st.caption(view.caption)
            continue
        if on_bars and params is not None:
            st.caption(f"No closed {params.timeframe} bars of {activity.symbol} yet: the tick chart instead.")
        tick_chart(activity, strategy_id, params)


def tick_chart(activity: SymbolActivity, strategy_id: str | None, params: StrategyParams | None) -> None:
    """The cached prices of one symbol with the strategy's moving averages over them and its orders."""
    sym = activity.symbol
    prices = pd.DataFrame([(p.ts, p.price) for p in activity.prices], columns=["ts", "price"])
    prices["ts"] = pd.to_datetime(prices["ts"], utc=True)
    if params is not None:
        short_w, long_w, kind = params.short_window, params.long_window, params.ma_type
        short, long_ = moving_averages(prices["price"].tolist(), kind, short_w, long_w)
        short_label, long_label = f"{kind.upper()} {short_w}", f"{kind.upper()} {long_w}"
    else:
        short = long_ = [math.nan] * len(prices)
        short_label, long_label = "short MA", "long MA"
    prices["short_ma"], prices["long_ma"] = short, long_
    marks = markers(activity.orders, activity.fills)
    st.markdown(
        f"**{sym}** — {len(prices)} cached prices, {len(marks)} orders"
        + (f" of {strategy_id}" if strategy_id else "")
    )
    if prices.empty and marks.empty:
        st.info(f"No prices or orders for {sym} yet.")
        return
    st.altair_chart(price_chart(prices, marks, short_label, long_label), width="stretch")
    if params is not None and len(prices) < params.long_window:
        st.caption(
            f"The API holds {len(prices)} recent prices of {sym}; the long MA needs "
            f"{params.long_window} before it shows."
        )
    elif params is None:
        st.caption("Choose one strategy to see its moving averages.")


def activity_panel(settings: DashboardSettings, strategy_ids: list[str]) -> None:
    strategy_id = _selected(STRATEGY_KEY)
    symbol = _selected(SYMBOL_KEY)
    chosen = [strategy_id] if strategy_id else strategy_ids
    try:
        with client(settings) as api:
            orders = api.log(OrderPage, strategy_id, symbol, limit=TABLE_ROWS)
            fills = api.log(FillPage, strategy_id, symbol, limit=TABLE_ROWS)
            positions = api.positions(strategy_id)
            pnl = api.pnl()
            curves = [(sid, api.equity_marked(sid)) for sid in chosen]
    except ApiUnavailable as exc:
        show_api_error(exc, settings)
        return

    st.subheader("P&L and positions")
    pnl_rows = [row for row in pnl if strategy_id is None or row.strategy_id == strategy_id]
    if strategy_id is not None:
        row = pnl_rows[0] if pnl_rows else None
        cols = st.columns(4)
        for col, (label, value) in zip(
            cols,
            (
                ("total P&L", row.total_pnl if row else 0.0),
                ("realised", row.realized_pnl if row else 0.0),
                ("unrealised", row.unrealized_pnl if row else 0.0),
                ("commissions", row.commissions if row else 0.0),
            ),
            strict=True,
        ):
            col.metric(label, f"{value:,.2f}")
    else:
        st.dataframe(
            table(pnl_rows, ["strategy_id", "total_pnl", "realized_pnl", "unrealized_pnl", "commissions"]),
            hide_index=True, width="stretch",
        )  # fmt: skip
    if symbol is not None:
        positions = [p for p in positions if p.symbol == symbol]
    st.dataframe(table(positions, POSITION_COLUMNS), hide_index=True, width="stretch")

    st.subheader("Equity and drawdown")
    frames = [equity_frame(points, sid) for sid, points in curves if points]
    if frames:
        equity, drawdown = equity_charts(pd.concat(frames, ignore_index=True))
        st.altair_chart(equity, width="stretch")
        st.altair_chart(drawdown, width="stretch")
    else:
        st.info("No prices yet: the equity curve starts with the first one.")

    left, right = st.columns(2)
    with left:
        st.subheader("Orders")
        st.caption(f"newest {TABLE_ROWS} first" + _filter_text(strategy_id, symbol))
        st.dataframe(table(orders, ORDER_COLUMNS), hide_index=True, width="stretch")
    with right:
        st.subheader("Fills")
        st.caption(f"newest {TABLE_ROWS} first" + _filter_text(strategy_id, symbol))
        st.dataframe(table(fills, FILL_COLUMNS), hide_index=True, width="stretch")


def _filter_text(strategy_id: str | None, symbol: str | None) -> str:
    parts = [p for p in (strategy_id, symbol) if p]
    return f"; {' / '.join(parts)}" if parts else ""


def wait_for_api(settings: DashboardSettings) -> None:
    """While the API is down: poll it, and rerun the whole page once it answers."""
    try:
        with client(settings) as api:
            api.strategies()
    except ApiUnavailable:
        return
    st.rerun()


def _fragment(run_every: float, body: Callable[..., None]) -> Callable[..., None]:
    wrapped: Callable[..., None] = st.fragment(run_every=run_every)(body)
    return wrapped


# -- page ---------------------------------------------------------------------------------------------
def render() -> None:
    st.title("Live")
    settings = load_dashboard_settings()
    if settings is None:
        return
    every = settings.refresh_seconds
    with st.sidebar:
        st.caption(f"API {settings.api_url} · refresh every {every:g} s")
        if settings.api_token is None:
            st.text_input(
                "API token", type="password", key=TOKEN_KEY,
                help="Bearer token for halt/resume, for this browser session only: never stored",
            )  # fmt: skip
        else:
            st.caption(
                "API token: from TRADEBOT_API_TOKEN (anyone who reaches this page can halt and resume)"
            )

    try:
        with client(settings) as api:
            strategies = {s.id: s for s in api.strategies()}
    except ApiUnavailable as exc:
        show_api_error(exc, settings)
        _fragment(every, wait_for_api)(settings)
        return
    ids = sorted(strategies)
    st.session_state[KNOWN_KEY] = ids
    symbols = sorted({sym for s in strategies.values() for sym in s.symbols})

    left, right = st.columns(2)
    left.selectbox(
        "Strategy", [ALL, *ids], index=1 if ids else 0, key=STRATEGY_KEY,
        format_func=lambda v: "All strategies" if v == ALL else v,
    )  # fmt: skip
    right.selectbox(
        "Symbol",
        [ALL, *symbols],
        index=0,
        key=SYMBOL_KEY,
        format_func=lambda v: "All symbols" if v == ALL else v,
    )

    st.subheader("Summary")
    _fragment(every, summary_panel)(settings)
    _fragment(every, trades_panel)(settings)
    st.subheader("Events")
    _fragment(every, events_panel)(settings)
    st.subheader("Strategies")
    _fragment(every, strategies_panel)(settings)
    st.subheader("Prices, moving averages and trades")
    _fragment(every, market_panel)(settings, strategies, symbols)
    _fragment(every, activity_panel)(settings, ids)


if __name__ == "__main__":
    render()
