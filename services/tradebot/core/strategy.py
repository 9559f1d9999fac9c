"""The moving-average crossover strategy: a pure, deterministic state machine (no I/O, no clock).

One `CrossoverStrategy` trades a set of symbols out of one cash account. It is fed prices and
answers with `OrderRequest`s; its book changes only through `on_fill`, so the caller decides how
orders fill: the backtester fills them by its fill model, the live strategy service assumes the fill
the paper broker will make (`tradebot.core.live`, which also tracks those orders until answered).

It composes the parts the backtest kernel compiles too, so both make the same decisions:
`signals` (moving averages and their cross), `risk` (stops, cooldown, daily loss), `sizing`, and
the `book`. Per price event (a tick, or a bar's close), in this order:
1. roll the UTC day (for the daily-loss limit),
2. stops: stop-loss, trailing stop and take-profit against the price (exit at that price),
3. the trailing reference (best price since entry) moves,
4. both moving averages take the price; on a cross:
5. exit the opposite position, then enter (shorts only with `allow_short`) unless a risk limit
   blocks it: cooldown after a stop-out, daily loss, or a size that rounds to 0. (Halting is the
   executor's: it refuses a halted strategy's entries.)

For bar data filled at the next open the backtester also calls `on_intrabar(open, high, low)` before
the close: stops then see the bar's range, fill at the stop level, or at the open when it gapped
through.

On a bar timeframe fed ticks (the live strategy, and the backtest given tick data), `on_tick` builds the
bars itself: a bar's close is a price event as above (moving averages, crosses, entries at the close),
and every tick is checked against the stops in between, in the true order of the prices (a tick is a
range of one price, so a stop fills at the tick that reached it, as on the `tick` timeframe). Signals
on bars, stops on ticks: no exit rule is needed, the order is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from tradebot.core.bars import TICK, Bar, BarBuilder, timeframe_ns
from tradebot.core.book import Book, Holding, cash_after_exit
from tradebot.core.costs import Costs
from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.indicators import MovingAverage
from tradebot.core.models import OrderReason, OrderRequest, Side, Signal, order_id
from tradebot.core.params import StrategyParams
from tradebot.core.risk import (
    EntryBlock,
    cooldown_until,
    day_of,
    entry_block,
    stop_exit,
    tracks_daily_loss,
    trail,
)
from tradebot.core.rules import NO_EXIT, Rules, exit_reason
from tradebot.core.signals import NO_CROSS, UP, Crossover
from tradebot.core.sizing import entry_size

SNAPSHOT_VERSION = 1


@dataclass
class SymbolState:
    """What the strategy keeps per symbol besides its holding: the signal and the risk state."""

    crossover: Crossover
    bar_index: int = -1
    cooldown_until: int = -1  # entries are blocked up to this bar index
    bars: BarBuilder | None = None  # the bar being built from ticks (bar timeframes fed ticks)


@dataclass(frozen=True)
class Step:
    """What one price event produced."""

    orders: list[OrderRequest]
    signal: Signal | None
    short_ma: float
    long_ma: float


@dataclass(frozen=True)
class TickStep:
    """What one tick produced on any timeframe: its orders (each already passed to the caller's
    `execute`), the cross it made, the bar it closed (bar timeframes) and whether it came late."""

    orders: list[OrderRequest]
    signal: Signal | None
    bar: Bar | None = None
    late: bool = False


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_ns(ts: datetime) -> int:
    """An aware datetime as integer epoch nanoseconds, exactly (no float rounding)."""
    return (ts - _EPOCH) // _MICROSECOND * 1000


def from_epoch_ns(ts_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)


def bar_cause(timeframe: str, start_ns: int) -> str:
    """A bar's close as an order's cause: the same bar always gives the same order ids."""
    return f"bar:{timeframe}:{start_ns}"


@dataclass
class Counters:
    """Fills refused by the broker and (live) orders in flight dropped from tracking."""

    rejected_fills: int = 0
    untracked_orders: int = 0  # live: orders in flight dropped from tracking (see tradebot.core.live)


@dataclass
class CrossoverStrategy:
    strategy_id: str
    params: StrategyParams
    costs: Costs = field(default_factory=Costs)
    initial_cash: float = DEFAULT_INITIAL_CASH
    day: int | None = None
    day_start_equity: float = math.nan
    symbols: dict[str, SymbolState] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    book: Book = field(init=False)
    rules: Rules = field(init=False)

    def __post_init__(self) -> None:
        self.book = Book(self.initial_cash)
        self.rules = Rules.of(self.params, self.costs)

    # -- state -----------------------------------------------------------------------------------
    def state(self, symbol: str) -> SymbolState:
        found = self.symbols.get(symbol)
        if found is None:
            found = self.symbols[symbol] = SymbolState(Crossover.of(self.params))
            if self.params.timeframe != TICK:
                found.bars = BarBuilder.of(self.params.timeframe)
            self.book.holding(symbol)
        return found

    def equity(self) -> float:
        """Cash plus every position marked at its last price."""
        return self.book.equity()

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this instance is (JSON-serialisable)."""
        return {
            **self.head_snapshot(),
            "symbols": {name: self._symbol_snapshot(name) for name in sorted(self.symbols)},
        }

    def head_snapshot(self) -> dict[str, Any]:
        """`snapshot()` without its symbols' states."""
        return {
            "version": SNAPSHOT_VERSION,
            "strategy_id": self.strategy_id,
            "params": self.params.model_dump(mode="json"),
            "costs": self.costs.model_dump(mode="json"),
            "initial_cash": self.initial_cash,
            "cash": self.book.cash,
            "halted": False,  # never set (the executor halts); kept so earlier versions still restore
            "day": self.day,
            "day_start_equity": self.day_start_equity,
        }

    def _symbol_snapshot(self, symbol: str) -> dict[str, Any]:
        st = self.symbols[symbol]
        held = self.book.holding(symbol)
        return {
            "short_ma": st.crossover.short_ma.snapshot(),
            "long_ma": st.crossover.long_ma.snapshot(),
            "qty": held.qty,
            "entry_price": held.entry_price,
            "best_price": held.best_price,
            "last_price": held.last_price,
            "prev_short": st.crossover.prev_short,
            "prev_long": st.crossover.prev_long,
            "bar_index": st.bar_index,
            "cooldown_until": st.cooldown_until,
            # Bar timeframes only (a tick strategy's snapshot keeps the format services already wrote).
            **({} if st.bars is None else {"bars": st.bars.snapshot()}),
        }

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> Self:
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"strategy snapshot version {snap.get('version')!r} is not {SNAPSHOT_VERSION}")
        strategy = cls(
            strategy_id=snap["strategy_id"],
            params=StrategyParams.model_validate(snap["params"]),
            costs=Costs.model_validate(snap["costs"]),
            initial_cash=float(snap["initial_cash"]),
            day=None if snap["day"] is None else int(snap["day"]),
            day_start_equity=float(snap["day_start_equity"]),
        )
        strategy.book.cash = float(snap["cash"])
        for name, state in snap["symbols"].items():
            strategy.symbols[name] = SymbolState(
                Crossover(
                    short_ma=MovingAverage.restore(state["short_ma"]),
                    long_ma=MovingAverage.restore(state["long_ma"]),
                    prev_short=float(state["prev_short"]),
                    prev_long=float(state["prev_long"]),
                ),
                bar_index=int(state["bar_index"]),
                cooldown_until=int(state["cooldown_until"]),
            )
            if strategy.params.timeframe != TICK:
                length = timeframe_ns(strategy.params.timeframe)
                bars = state.get("bars")  # absent from snapshots of tick strategies
                strategy.symbols[name].bars = (
                    BarBuilder(length) if bars is None else BarBuilder.restore(length, bars)
                )
            strategy.book.holdings[name] = Holding(
                qty=float(state["qty"]),
                entry_price=float(state["entry_price"]),
                best_price=float(state["best_price"]),
                last_price=float(state["last_price"]),
            )
        return strategy

    # -- events ----------------------------------------------------------------------------------
    def on_price(
        self, symbol: str, price: float, ts: datetime, cause: str, *, check_stops: bool = True
    ) -> Step:
        """A tick, or a bar's close. `cause` names the event (it seeds the deterministic order ids)."""
        st = self.state(symbol)
        held = self.book.holding(symbol)
        self._roll_day(ts)
        st.bar_index += 1
        held.last_price = price
        orders: list[OrderRequest] = []
        position = held.qty
        cash_after = self.book.cash
        if check_stops and position != 0.0:
            stop = self._stop(symbol, st, held, price, price, price, ts, cause, st.bar_index)
            if stop is not None:
                orders.append(stop)
                cash_after = cash_after_exit(self.rules, self.book.cash, position, stop.ref_price)
                position = 0.0
        held.best_price = trail(held.qty, held.best_price, price, price)

        short_ma, long_ma, direction = st.crossover.update(price)
        signal: Signal | None = None
        if direction != NO_CROSS:
            signal = Signal(
                strategy_id=self.strategy_id,
                symbol=symbol,
                ts=ts,
                direction="up" if direction == UP else "down",
                short_ma=short_ma,
                long_ma=long_ma,
                price=price,
            )
            if position * direction < 0.0:
                cash_after = cash_after_exit(self.rules, self.book.cash, position, price)
                exit_side = Side.BUY if position < 0.0 else Side.SELL
                orders.append(
                    self._order(
                        symbol, exit_side, abs(position), OrderReason.EXIT_CROSS, price, ts, cause, leg=0
                    )
                )
                position = 0.0
            if position == 0.0 and (direction == UP or self.rules.allow_short):
                entry = self._entry(symbol, st, direction, price, cash_after, ts, cause)
                if entry is not None:
                    orders.append(entry)
        return Step(orders=orders, signal=signal, short_ma=short_ma, long_ma=long_ma)

    def on_tick(
        self,
        symbol: str,
        price: float,
        size: float,
        ts: datetime,
        cause: str,
        execute: Callable[[OrderRequest], None],
    ) -> TickStep:
        """A trade on any timeframe. Each order is passed to `execute` as soon as it is decided, which
        must fill it (`on_fill`, or the live strategy's assumed fill) before the next decision: the
        stops of a tick that also closed a bar see the position the bar's close entered."""
        if self.params.timeframe == TICK:
            step = self.on_price(symbol, price, ts, cause)
            for order in step.orders:
                execute(order)
            return TickStep(step.orders, step.signal)
        builder = self.state(symbol).bars
        assert builder is not None  # made with the state on a bar timeframe
        late = builder.late
        closed = builder.on_tick(epoch_ns(ts), price, size)
        if builder.late > late:
            return TickStep([], None, late=True)
        orders: list[OrderRequest] = []
        signal: Signal | None = None
        if closed is not None:
            step = self.on_bar_close(symbol, closed)
            for order in step.orders:
                execute(order)
            orders, signal = step.orders, step.signal
        for order in self.on_tick_stops(symbol, price, ts, cause):
            execute(order)
            orders.append(order)
        return TickStep(orders, signal, closed)

    def on_bar_close(self, symbol: str, bar: Bar) -> Step:
        """A bar built from ticks closed (by a later tick, the clock or the end of the data): moving
        averages, crosses and entries at its close; its ticks have already seen the stops."""
        cause = bar_cause(self.params.timeframe, bar.start_ns)
        return self.on_price(symbol, bar.close, from_epoch_ns(bar.start_ns), cause, check_stops=False)

    def warm_up(self, symbol: str, closes: list[float], history_end_ns: int) -> None:
        """Bars closed before this instance started (the `bars` topic, or a dataset), oldest first: their
        closes fill the moving averages, trading nothing, so the first new bar can cross. Ticks before
        `history_end_ns` (the end of the last of them) are in that history: they are skipped."""
        st = self.state(symbol)
        for close in closes:
            st.crossover.update(close)
        st.bar_index += len(closes)
        if st.bars is not None:
            st.bars.history_end_ns = history_end_ns

    def bars_short(self, symbol: str) -> int:
        """How many more bar closes the long moving average needs before it has a value."""
        found = self.symbols.get(symbol)  # read only: readiness asks from another thread
        if found is None:
            return self.params.long_window
        long_ma = found.crossover.long_ma
        return max(0, long_ma.window - long_ma.count)

    def on_tick_stops(self, symbol: str, price: float, ts: datetime, cause: str) -> list[OrderRequest]:
        """Stops against one tick inside the bar being built (filled at the tick's price); it marks the
        position and moves the trailing reference. A stop-out's cooldown counts from that bar."""
        st = self.state(symbol)
        held = self.book.holding(symbol)
        self._roll_day(ts)
        held.last_price = price
        orders: list[OrderRequest] = []
        if held.qty != 0.0:
            stop = self._stop(symbol, st, held, price, price, price, ts, cause, st.bar_index + 1)
            if stop is not None:
                orders.append(stop)
        held.best_price = trail(held.qty, held.best_price, price, price)
        return orders

    def close_due_bars(
        self, now: datetime, lateness_ns: int, execute: Callable[[OrderRequest], None]
    ) -> list[tuple[str, Bar, Step]]:
        """Closes on the clock every symbol's bar whose bucket ended `lateness_ns` before `now`
        (a live source that went quiet); each close trades as `on_bar_close`."""
        now_ns = epoch_ns(now)
        closed: list[tuple[str, Bar, Step]] = []
        for name in sorted(self.symbols):
            builder = self.symbols[name].bars
            bar = None if builder is None else builder.close_due(now_ns, lateness_ns)
            if bar is not None:
                step = self.on_bar_close(name, bar)
                for order in step.orders:
                    execute(order)
                closed.append((name, bar, step))
        return closed

    def on_intrabar(
        self, symbol: str, open_: float, high: float, low: float, ts: datetime, cause: str
    ) -> list[OrderRequest]:
        """Stops against a bar's range (next-open fills): exits at the stop level, or at the open on a gap."""
        st = self.state(symbol)
        held = self.book.holding(symbol)
        self._roll_day(ts)
        orders: list[OrderRequest] = []
        if held.qty != 0.0:
            # Seen before the bar's close event moves the bar index on.
            stop = self._stop(symbol, st, held, open_, high, low, ts, cause + ":intrabar", st.bar_index + 1)
            if stop is not None:
                orders.append(stop)
        held.best_price = trail(held.qty, held.best_price, high, low)
        return orders

    def on_fill(
        self, side: Side, qty: float, price: float, fee: float, symbol: str, *, filled: bool = True
    ) -> None:
        """Applies a fill (price already includes slippage; `fee` is the commission)."""
        if not filled:
            self.counters.rejected_fills += 1
            return
        self.state(symbol)
        self.book.fill(symbol, side.sign * qty, price, fee)

    def force_exit(self, symbol: str, ts: datetime, cause: str) -> OrderRequest | None:
        """The order that closes the position in `symbol` at its last price (a person's force-exit), or
        None when there is none to close. The caller applies its fill like any other order's, so the
        strategy knows at once that the position is closed and its stops and crosses leave it be."""
        held = self.book.holdings.get(symbol)
        if held is None or held.qty == 0.0 or not math.isfinite(held.last_price) or held.last_price <= 0.0:
            return None
        side = Side.SELL if held.qty > 0.0 else Side.BUY
        return self._order(
            symbol, side, abs(held.qty), OrderReason.FORCE_EXIT, held.last_price, ts, cause, leg=0
        )

    # -- internals -------------------------------------------------------------------------------
    def _roll_day(self, ts: datetime) -> None:
        if not tracks_daily_loss(self.rules):
            return
        day = day_of(ts)
        if day != self.day:
            self.day = day
            self.day_start_equity = self.book.equity()

    def _stop(
        self,
        symbol: str,
        st: SymbolState,
        held: Holding,
        open_: float,
        high: float,
        low: float,
        ts: datetime,
        cause: str,
        bar_index: int,
    ) -> OrderRequest | None:
        code, exit_at = stop_exit(self.rules, held.qty, held.entry_price, held.best_price, open_, high, low)
        if code == NO_EXIT:
            return None
        st.cooldown_until = cooldown_until(self.rules, code, bar_index, st.cooldown_until)
        side = Side.SELL if held.qty > 0.0 else Side.BUY
        return self._order(symbol, side, abs(held.qty), exit_reason(code), exit_at, ts, cause, leg=0)

    def _entry(
        self,
        symbol: str,
        st: SymbolState,
        want: int,
        price: float,
        cash_after: float,
        ts: datetime,
        cause: str,
    ) -> OrderRequest | None:
        other_value, other_gross = self.book.others(symbol)
        equity = cash_after + other_value
        block = entry_block(self.rules, st.bar_index, st.cooldown_until, equity, self.day_start_equity)
        if block != EntryBlock.NONE:
            return None
        qty = entry_size(self.rules, want, price, cash_after, equity, other_gross)
        if not qty > 0.0:
            return None
        reason = OrderReason.ENTRY_LONG if want > 0 else OrderReason.ENTRY_SHORT
        side = Side.BUY if want > 0 else Side.SELL
        return self._order(symbol, side, qty, reason, price, ts, cause, leg=1)

    def _order(
        self,
        symbol: str,
        side: Side,
        qty: float,
        reason: OrderReason,
        ref_price: float,
        ts: datetime,
        cause: str,
        *,
        leg: int,
    ) -> OrderRequest:
        return OrderRequest(
            id=order_id(self.strategy_id, symbol, cause, leg),
            strategy_id=self.strategy_id,
            symbol=symbol,
            side=side,
            qty=qty,
            reason=reason,
            ref_price=ref_price,
            ts=ts,
            cause=cause,
        )
