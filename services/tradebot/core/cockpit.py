"""What the live page shows a trader, computed from the record: trades, the marked equity curve, the summary.

Pure functions over executions (filled orders, in event time: the order's `ts`, the time of the price the
strategy acted on) and price points. The API reads the store and calls these; the dashboard only draws.

- Trades: each position from flat to flat is one trade (the strategy never adds to a position), its profit
  net of both commissions, in currency and in percent of what it cost to enter.
- The equity curve is marked to market at every price point, open positions included, as the backtest's is
  at every bar: cash after each execution plus each position at its symbol's latest price.
- The summary: equity, P&L realised and unrealised (currency and percent of the initial cash), the P&L of
  the current (UTC) day of the data, open exposure, the maximum drawdown of the marked curve, the number
  of closed trades, their win rate and profit factor.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from tradebot.core.models import AwareDatetime, Fill, FillStatus, FiniteFloat, OrderReason
from tradebot.core.params import StrategyParams
from tradebot.core.views import View

# A position this close to zero is closed (the float residue of the fill that closed it).
FLAT = 1e-9


@dataclass(frozen=True)
class Execution:
    """A filled order: `side` +1 bought, -1 sold; `price` as executed (slippage in), `ts` its event time."""

    symbol: str
    side: int
    qty: float
    price: float
    commission: float
    ts: datetime
    reason: OrderReason


class OpenTrade(View):
    strategy_id: str
    symbol: str
    side: Literal["long", "short"]
    qty: FiniteFloat
    entry_ts: AwareDatetime
    entry_price: FiniteFloat
    last_price: FiniteFloat
    unrealized_pnl: FiniteFloat = Field(description="At the last price, before the exit's commission.")
    unrealized_pct: FiniteFloat = Field(description="unrealized_pnl in percent of the entry's cost.")
    duration_s: FiniteFloat = Field(description="Seconds from the entry to the latest price.")
    stop_loss: FiniteFloat | None = Field(description="The stop-loss level; null without one.")
    take_profit: FiniteFloat | None = Field(description="The take-profit level; null without one.")
    trailing_stop: FiniteFloat | None = Field(description="The trailing stop's level now; null without one.")


class ClosedTrade(View):
    strategy_id: str
    symbol: str
    side: Literal["long", "short"]
    qty: FiniteFloat
    entry_ts: AwareDatetime
    entry_price: FiniteFloat
    exit_ts: AwareDatetime
    exit_price: FiniteFloat
    exit_reason: OrderReason
    pnl: FiniteFloat = Field(description="Profit net of both commissions.")
    pnl_pct: FiniteFloat = Field(description="pnl in percent of the entry's cost.")
    duration_s: FiniteFloat


class ProfitBy(View):
    """Closed trades' profit per symbol or per (UTC) day of their exit."""

    strategy_id: str
    key: str = Field(description="The symbol, or the day as YYYY-MM-DD.")
    trades: int
    pnl: FiniteFloat


class Trades(View):
    open: list[OpenTrade] = Field(description="Positions held now (flat ones are not trades).")
    closed: list[ClosedTrade] = Field(description="Newest exit first; the newest `limit` when asked for.")
    closed_total: int = Field(description="Closed trades in all, however many are listed.")
    by_symbol: list[ProfitBy]
    by_day: list[ProfitBy] = Field(description="Newest day first.")


class MarkedPoint(View):
    ts: AwareDatetime
    equity: FiniteFloat
    drawdown_pct: FiniteFloat = Field(description="Below the highest equity so far, in percent of it.")


class MarkedEquity(View):
    strategy_id: str
    points: list[MarkedPoint] = Field(
        description="Equity at every price point of the strategy's symbols (open positions marked), oldest first."
    )


class Summary(View):
    strategy_id: str = Field(description="The strategy, or `total` for all of them.")
    initial_cash: FiniteFloat
    equity: FiniteFloat
    pnl: FiniteFloat = Field(description="equity - initial_cash: realised (net of commissions) + unrealised.")
    pnl_pct: FiniteFloat
    realized_pnl: FiniteFloat = Field(description="Net of commissions.")
    realized_pct: FiniteFloat
    unrealized_pnl: FiniteFloat
    unrealized_pct: FiniteFloat
    today_pnl: FiniteFloat = Field(description="Since the start of the latest price's UTC day.")
    exposure: FiniteFloat = Field(description="Open positions at their last prices, long plus short.")
    max_drawdown_pct: FiniteFloat = Field(description="Of the marked equity curve, in percent.")
    trades: int = Field(description="Closed trades.")
    win_rate_pct: FiniteFloat | None = Field(
        description="Closed trades with a profit, in percent; null without any."
    )
    profit_factor: FiniteFloat | None = Field(
        description="Gross profit over gross loss of closed trades; null without a losing trade."
    )


EventKind = Literal[
    "entry",
    "exit",
    "stop-out",
    "take-profit",
    "force-exit",
    "refusal",
    "halt",
    "resume",
    "force-exit-request",
]


class StrategyEvent(View):
    """Something a strategy did or had done to it, as the live page's event log shows it."""

    ts: AwareDatetime = Field(
        description="Fills: the event time of the order; commands: when they were given."
    )
    strategy_id: str
    kind: EventKind
    symbol: str | None = None
    message: str
    order_id: str | None = None


class EventList(View):
    items: list[StrategyEvent] = Field(description="Newest first.")


FILL_EVENT_KINDS: dict[OrderReason, EventKind] = {
    OrderReason.ENTRY_LONG: "entry",
    OrderReason.ENTRY_SHORT: "entry",
    OrderReason.EXIT_CROSS: "exit",
    OrderReason.END_OF_DATA: "exit",
    OrderReason.STOP_LOSS: "stop-out",
    OrderReason.TRAILING_STOP: "stop-out",
    OrderReason.TAKE_PROFIT: "take-profit",
    OrderReason.FORCE_EXIT: "force-exit",
}


def fill_event(fill: Fill, ts: datetime) -> StrategyEvent:
    """The event a fill or refusal is (`ts`: its order's event time)."""
    if fill.status is FillStatus.REJECTED:
        return StrategyEvent(
            ts=ts,
            strategy_id=fill.strategy_id,
            kind="refusal",
            symbol=fill.symbol,
            message=f"{fill.reason.value} {fill.side.value} refused: {fill.reject_reason}",
            order_id=fill.order_id,
        )
    return StrategyEvent(
        ts=ts,
        strategy_id=fill.strategy_id,
        kind=FILL_EVENT_KINDS.get(fill.reason, "exit"),
        symbol=fill.symbol,
        message=f"{fill.reason.value}: {fill.side.value} {fill.qty:g} at {fill.price:.4f}",
        order_id=fill.order_id,
    )


class SummaryList(View):
    items: list[Summary]
    total: Summary


@dataclass
class _Leg:
    qty: float  # signed
    entry_price: float
    entry_ts: datetime
    commission: float


def _side(qty: float) -> Literal["long", "short"]:
    return "long" if qty > 0 else "short"


def trades(
    strategy_id: str,
    executions: Sequence[Execution],
    marks: dict[str, tuple[float, datetime]],
    params: StrategyParams | None = None,
    best_prices: dict[str, float] | None = None,
) -> tuple[list[OpenTrade], list[ClosedTrade]]:
    """The open and closed trades of `executions` (oldest first). `marks`: each symbol's last price and its
    time; `best_prices`: the best price since each open trade's entry (the trailing stop's reference)."""
    legs: dict[str, _Leg] = {}
    closed: list[ClosedTrade] = []
    for ex in executions:
        signed = ex.side * ex.qty
        leg = legs.get(ex.symbol)
        if leg is None:
            legs[ex.symbol] = _Leg(signed, ex.price, ex.ts, ex.commission)
            continue
        if (leg.qty > 0) == (signed > 0):  # the strategy never adds; a broker's record might
            total = abs(leg.qty) + ex.qty
            leg.entry_price = (abs(leg.qty) * leg.entry_price + ex.qty * ex.price) / total
            leg.qty += signed
            leg.commission += ex.commission
            continue
        closing = min(abs(leg.qty), ex.qty)
        share = closing / abs(leg.qty)
        entry_fee = leg.commission * share
        exit_fee = ex.commission * closing / ex.qty
        direction = 1.0 if leg.qty > 0 else -1.0
        pnl = direction * (ex.price - leg.entry_price) * closing - entry_fee - exit_fee
        closed.append(
            ClosedTrade(
                strategy_id=strategy_id,
                symbol=ex.symbol,
                side=_side(leg.qty),
                qty=closing,
                entry_ts=leg.entry_ts,
                entry_price=leg.entry_price,
                exit_ts=ex.ts,
                exit_price=ex.price,
                exit_reason=ex.reason,
                pnl=pnl,
                pnl_pct=pnl / (leg.entry_price * closing) * 100.0,
                duration_s=(ex.ts - leg.entry_ts).total_seconds(),
            )
        )
        leg.qty += signed
        leg.commission -= entry_fee
        if abs(leg.qty) < FLAT:
            del legs[ex.symbol]
        elif (leg.qty > 0) == (signed > 0):  # flipped through zero: the rest opened here
            legs[ex.symbol] = _Leg(leg.qty, ex.price, ex.ts, ex.commission - exit_fee)
    open_trades = []
    for symbol, leg in sorted(legs.items()):
        price, at = marks.get(symbol, (leg.entry_price, leg.entry_ts))
        qty = abs(leg.qty)
        unrealized = (1.0 if leg.qty > 0 else -1.0) * (price - leg.entry_price) * qty
        # Without the prices since entry, the best of the entry and the last price.
        fallback = max(leg.entry_price, price) if leg.qty > 0 else min(leg.entry_price, price)
        best = (best_prices or {}).get(symbol, fallback)
        stop_loss, take_profit, trailing = stop_levels(params, leg.qty > 0, leg.entry_price, best)
        open_trades.append(
            OpenTrade(
                strategy_id=strategy_id,
                symbol=symbol,
                side=_side(leg.qty),
                qty=qty,
                entry_ts=leg.entry_ts,
                entry_price=leg.entry_price,
                last_price=price,
                unrealized_pnl=unrealized,
                unrealized_pct=unrealized / (leg.entry_price * qty) * 100.0,
                duration_s=max(0.0, (at - leg.entry_ts).total_seconds()),
                stop_loss=stop_loss,
                take_profit=take_profit,
                trailing_stop=trailing,
            )
        )
    return open_trades, closed


def stop_levels(
    params: StrategyParams | None, long: bool, entry_price: float, best_price: float
) -> tuple[float | None, float | None, float | None]:
    """(stop-loss, take-profit, trailing stop) price levels of a position, as `core.risk.stop_exit` sets them."""
    if params is None:
        return None, None, None
    sign = 1.0 if long else -1.0

    def level(base: float, pct: float | None, towards: float) -> float | None:
        return None if pct is None else base * (1.0 + towards * sign * pct / 100.0)

    return (
        level(entry_price, params.stop_loss_pct, -1.0),
        level(entry_price, params.take_profit_pct, 1.0),
        level(best_price, params.trailing_stop_pct, -1.0),
    )


def profit_by(closed: Iterable[ClosedTrade], by: Literal["symbol", "day"]) -> list[ProfitBy]:
    totals: dict[tuple[str, str], tuple[int, float]] = {}
    for trade in closed:
        key = trade.symbol if by == "symbol" else trade.exit_ts.astimezone(UTC).date().isoformat()
        count, pnl = totals.get((trade.strategy_id, key), (0, 0.0))
        totals[(trade.strategy_id, key)] = (count + 1, pnl + trade.pnl)
    rows = [ProfitBy(strategy_id=s, key=k, trades=n, pnl=p) for (s, k), (n, p) in totals.items()]
    if by == "day":
        return sorted(rows, key=lambda row: (row.key, row.strategy_id), reverse=True)
    return sorted(rows, key=lambda row: (row.strategy_id, row.key))


def marked_equity(
    initial_cash: float,
    executions: Sequence[Execution],
    prices: Mapping[str, Sequence[tuple[datetime, float]]],
) -> list[tuple[datetime, float]]:
    """(time, equity) at every price point of `prices` (per symbol, oldest first): cash after the executions
    up to that time (an execution at the same time first: the strategy acted on that price) plus each
    position at its symbol's latest price."""
    cash = initial_cash
    held: dict[str, float] = {}
    last: dict[str, float] = {}
    value = 0.0  # sum of held * last, kept up to date
    points: list[tuple[datetime, float]] = []
    pending = iter(executions)
    upcoming = next(pending, None)
    stream = heapq.merge(
        *([(ts, symbol, price) for ts, price in series] for symbol, series in prices.items())
    )

    def execute(ex: Execution) -> None:
        nonlocal cash, value
        cash -= ex.side * ex.qty * ex.price + ex.commission
        value += ex.side * ex.qty * last.setdefault(ex.symbol, ex.price)
        held[ex.symbol] = held.get(ex.symbol, 0.0) + ex.side * ex.qty

    for ts, symbol, price in stream:
        while upcoming is not None and upcoming.ts <= ts:
            execute(upcoming)
            upcoming = next(pending, None)
        value += held.get(symbol, 0.0) * (price - last.get(symbol, price))
        last[symbol] = price
        points.append((ts, cash + value))
    # Executions after the last price (a force-exit between two prices): a point each.
    while upcoming is not None:
        execute(upcoming)
        points.append((upcoming.ts, cash + value))
        upcoming = next(pending, None)
    return points


def with_drawdown(points: Sequence[tuple[datetime, float]]) -> list[MarkedPoint]:
    peak = -math.inf
    marked = []
    for ts, equity in points:
        peak = max(peak, equity)
        drawdown = (peak - equity) / peak * 100.0 if peak > 0 else 0.0
        marked.append(MarkedPoint(ts=ts, equity=equity, drawdown_pct=drawdown))
    return marked


def combined(
    curves: Sequence[tuple[float, Sequence[tuple[datetime, float]]]],
) -> list[tuple[datetime, float]]:
    """The sum of several strategies' curves ((initial cash, points)): at each time, each at its latest value."""
    latest = [initial for initial, _ in curves]
    stream = heapq.merge(
        *([(ts, i, equity) for ts, equity in points] for i, (_, points) in enumerate(curves))
    )
    out: list[tuple[datetime, float]] = []
    for ts, i, equity in stream:
        latest[i] = equity
        if out and out[-1][0] == ts:
            out[-1] = (ts, sum(latest))
        else:
            out.append((ts, sum(latest)))
    return out


def summary(
    strategy_id: str,
    initial_cash: float,
    realized: float,
    unrealized: float,
    exposure: float,
    curve: Sequence[tuple[datetime, float]],
    closed: Sequence[ClosedTrade],
) -> Summary:
    """`realized` net of commissions; `curve` the marked equity, oldest first (its last point is not assumed
    to be now: the equity is `initial_cash + realized + unrealized`)."""
    equity = initial_cash + realized + unrealized
    peak, worst = initial_cash, 0.0
    for _, value in [*curve, (None, equity)]:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak * 100.0)
    today_start = equity_at_day_start(initial_cash, curve)
    wins = [t.pnl for t in closed if t.pnl > 0]
    losses = [-t.pnl for t in closed if t.pnl < 0]

    def pct(amount: float) -> float:
        return amount / initial_cash * 100.0 if initial_cash > 0 else 0.0

    return Summary(
        strategy_id=strategy_id,
        initial_cash=initial_cash,
        equity=equity,
        pnl=equity - initial_cash,
        pnl_pct=pct(equity - initial_cash),
        realized_pnl=realized,
        realized_pct=pct(realized),
        unrealized_pnl=unrealized,
        unrealized_pct=pct(unrealized),
        today_pnl=equity - today_start,
        exposure=exposure,
        max_drawdown_pct=worst,
        trades=len(closed),
        win_rate_pct=len(wins) / len(closed) * 100.0 if closed else None,
        profit_factor=sum(wins) / sum(losses) if losses else None,
    )


def equity_at_day_start(initial_cash: float, curve: Sequence[tuple[datetime, float]]) -> float:
    """The equity at the start of the UTC day of the curve's last point: its last point before that day."""
    if not curve:
        return initial_cash
    day_start = datetime.combine(curve[-1][0].astimezone(UTC).date(), datetime.min.time(), UTC)
    before = [value for ts, value in curve if ts < day_start]
    return before[-1] if before else initial_cash
