"""The moving-average crossover strategy: a pure, deterministic state machine (no I/O, no clock).

One `CrossoverStrategy` trades a set of symbols out of one cash account. It is fed prices and
answers with `OrderRequest`s; its book changes only through `on_fill`, so the caller decides how
orders fill: the backtester fills them by its fill model, the live strategy service assumes the fill
the paper broker will make (same price, same costs).

Per price event (a tick, or a bar's close), in this order:
1. roll the UTC day (for the daily-loss limit),
2. stops: stop-loss, trailing stop and take-profit against the price (exit at that price),
3. the trailing reference (best price since entry) moves,
4. both moving averages take the price; a cross is `prev_short < prev_long and short > long`
   (mirror for down), the definition backtesting.py uses,
5. on a cross: exit the opposite position, then enter (shorts only with `allow_short`) unless a
   risk limit blocks it: halted, cooldown after a stop-out, daily loss, or a size that rounds to 0.

For bar data filled at the next open the backtester also calls `on_intrabar(open, high, low)` before
the close: stops then see the bar's range, fill at the stop level, or at the open when it gapped
through.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from tradebot.core.costs import Costs, fill_price, floor_to_step
from tradebot.core.indicators import MovingAverage
from tradebot.core.models import OrderReason, OrderRequest, Side, Signal, order_id, position_refusal
from tradebot.core.params import StrategyParams

SNAPSHOT_VERSION = 1
# Orders in flight tracked per strategy. A live executor answers within a few hundred ms, so a
# handful are in flight; more means it is not answering, and the snapshot (one Kafka record per
# transaction) must stay small. Past this the oldest is no longer tracked: its answer is applied
# as it comes, without re-checking the orders behind it.
MAX_TRACKED_IN_FLIGHT = 100
_STOP_REASONS = (OrderReason.STOP_LOSS, OrderReason.TRAILING_STOP)


def day_of(ts: datetime) -> int:
    """The UTC day number (days since the epoch) of an aware timestamp."""
    return math.floor(ts.timestamp() / 86_400.0)


@dataclass
class InFlight:
    """An order sent and assumed filled whose answer from the broker has not been read yet."""

    order_id: str
    reason: OrderReason
    side: Side
    qty: float
    ref_price: float
    # The entry and best price before an exit was assumed: restored if the exit is refused.
    entry_price: float = 0.0
    best_price: float = 0.0
    # Predicted to be refused (it closes a position whose entry was refused): already undone.
    doomed: bool = False

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)  # the enums are strings: JSON keeps their values

    @classmethod
    def restore(cls, state: dict[str, Any]) -> InFlight:
        return cls(**{**state, "reason": OrderReason(state["reason"]), "side": Side(state["side"])})


@dataclass
class SymbolState:
    short_ma: MovingAverage
    long_ma: MovingAverage
    qty: float = 0.0  # signed: < 0 is short
    entry_price: float = 0.0
    best_price: float = 0.0  # highest since entry when long, lowest when short
    last_price: float = math.nan
    prev_short: float = math.nan
    prev_long: float = math.nan
    bar_index: int = -1
    cooldown_until: int = -1
    in_flight: list[InFlight] = field(default_factory=list)  # in the order they were sent

    def snapshot(self) -> dict[str, Any]:
        return {
            "short_ma": self.short_ma.snapshot(),
            "long_ma": self.long_ma.snapshot(),
            "qty": self.qty,
            "entry_price": self.entry_price,
            "best_price": self.best_price,
            "last_price": self.last_price,
            "prev_short": self.prev_short,
            "prev_long": self.prev_long,
            "bar_index": self.bar_index,
            "cooldown_until": self.cooldown_until,
            "in_flight": [order.snapshot() for order in self.in_flight],
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> SymbolState:
        return cls(
            short_ma=MovingAverage.restore(state["short_ma"]),
            long_ma=MovingAverage.restore(state["long_ma"]),
            qty=float(state["qty"]),
            entry_price=float(state["entry_price"]),
            best_price=float(state["best_price"]),
            last_price=float(state["last_price"]),
            prev_short=float(state["prev_short"]),
            prev_long=float(state["prev_long"]),
            bar_index=int(state["bar_index"]),
            cooldown_until=int(state["cooldown_until"]),
            # Absent from snapshots written before orders in flight were tracked.
            in_flight=[InFlight.restore(order) for order in state.get("in_flight", [])],
        )


@dataclass(frozen=True)
class Step:
    """What one price event produced."""

    orders: list[OrderRequest]
    signal: Signal | None
    short_ma: float
    long_ma: float


@dataclass
class Counters:
    """Why entries did not happen; exported as metrics by the service."""

    blocked_halted: int = 0
    blocked_cooldown: int = 0
    blocked_daily_loss: int = 0
    blocked_size: int = 0
    rejected_fills: int = 0
    untracked_orders: int = 0  # orders in flight dropped from tracking past MAX_TRACKED_IN_FLIGHT


@dataclass
class CrossoverStrategy:
    strategy_id: str
    params: StrategyParams
    costs: Costs = field(default_factory=Costs)
    initial_cash: float = 10_000.0
    cash: float = math.nan
    halted: bool = False
    day: int | None = None
    day_start_equity: float = math.nan
    symbols: dict[str, SymbolState] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        if math.isnan(self.cash):
            self.cash = self.initial_cash

    # -- state -----------------------------------------------------------------------------------
    def state(self, symbol: str) -> SymbolState:
        found = self.symbols.get(symbol)
        if found is None:
            found = SymbolState(
                short_ma=MovingAverage(self.params.ma_type, self.params.short_window),
                long_ma=MovingAverage(self.params.ma_type, self.params.long_window),
            )
            self.symbols[symbol] = found
        return found

    def equity(self) -> float:
        """Cash plus every position marked at its last price."""
        total = self.cash
        for st in self.symbols.values():
            if st.qty != 0.0:
                total += st.qty * st.last_price
        return total

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this instance is (JSON-serialisable)."""
        return {
            "version": SNAPSHOT_VERSION,
            "strategy_id": self.strategy_id,
            "params": self.params.model_dump(mode="json"),
            "costs": self.costs.model_dump(mode="json"),
            "initial_cash": self.initial_cash,
            "cash": self.cash,
            "halted": self.halted,
            "day": self.day,
            "day_start_equity": self.day_start_equity,
            "symbols": {name: st.snapshot() for name, st in sorted(self.symbols.items())},
        }

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> CrossoverStrategy:
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"strategy snapshot version {snap.get('version')!r} is not {SNAPSHOT_VERSION}")
        return cls(
            strategy_id=snap["strategy_id"],
            params=StrategyParams.model_validate(snap["params"]),
            costs=Costs.model_validate(snap["costs"]),
            initial_cash=float(snap["initial_cash"]),
            cash=float(snap["cash"]),
            halted=bool(snap["halted"]),
            day=None if snap["day"] is None else int(snap["day"]),
            day_start_equity=float(snap["day_start_equity"]),
            symbols={name: SymbolState.restore(st) for name, st in snap["symbols"].items()},
        )

    # -- events ----------------------------------------------------------------------------------
    def on_price(
        self, symbol: str, price: float, ts: datetime, cause: str, *, check_stops: bool = True
    ) -> Step:
        """A tick, or a bar's close. `cause` names the event (it seeds the deterministic order ids)."""
        st = self.state(symbol)
        self._roll_day(ts)
        st.bar_index += 1
        st.last_price = price
        orders: list[OrderRequest] = []
        position = st.qty
        cash_after = self.cash
        if check_stops and position != 0.0:
            stop = self._stop_order(symbol, st, price, price, price, ts, cause)
            if stop is not None:
                orders.append(stop)
                cash_after = self._cash_after_exit(position, stop.ref_price)
                position = 0.0
        self._move_best(st, price, price)

        short_ma = st.short_ma.update(price)
        long_ma = st.long_ma.update(price)
        cross_up = st.prev_short < st.prev_long and short_ma > long_ma
        cross_down = st.prev_short > st.prev_long and short_ma < long_ma
        st.prev_short, st.prev_long = short_ma, long_ma
        signal: Signal | None = None
        if cross_up or cross_down:
            signal = Signal(
                strategy_id=self.strategy_id,
                symbol=symbol,
                ts=ts,
                direction="up" if cross_up else "down",
                short_ma=short_ma,
                long_ma=long_ma,
                price=price,
            )
            want = 1 if cross_up else -1
            if position * want < 0.0:
                exit_side = Side.BUY if position < 0.0 else Side.SELL
                cash_after = self._cash_after_exit(position, price)
                orders.append(
                    self._order(
                        symbol, exit_side, abs(position), OrderReason.EXIT_CROSS, price, ts, cause, leg=0
                    )
                )
                position = 0.0
            if position == 0.0 and (want > 0 or self.params.allow_short):
                entry = self._entry(symbol, st, want, price, cash_after, ts, cause)
                if entry is not None:
                    orders.append(entry)
        return Step(orders=orders, signal=signal, short_ma=short_ma, long_ma=long_ma)

    def on_intrabar(
        self, symbol: str, open_: float, high: float, low: float, ts: datetime, cause: str
    ) -> list[OrderRequest]:
        """Stops against a bar's range (next-open fills): exits at the stop level, or at the open on a gap."""
        st = self.state(symbol)
        self._roll_day(ts)
        orders: list[OrderRequest] = []
        if st.qty != 0.0:
            stop = self._stop_order(symbol, st, open_, high, low, ts, cause + ":intrabar", upcoming_bar=True)
            if stop is not None:
                orders.append(stop)
        self._move_best(st, high, low)
        return orders

    def on_fill(
        self, side: Side, qty: float, price: float, fee: float, symbol: str, *, filled: bool = True
    ) -> None:
        """Applies a fill (price already includes slippage; `fee` is the commission)."""
        if not filled:
            self.counters.rejected_fills += 1
            return
        st = self.state(symbol)
        signed = side.sign * qty
        self.cash -= signed * price + fee
        if st.qty == 0.0:
            st.qty = signed
            st.entry_price = price
            st.best_price = price
            return
        st.qty += signed
        if abs(st.qty) < 1e-12:
            st.qty = 0.0
            st.entry_price = 0.0
            st.best_price = 0.0

    def assume_filled(self, order: OrderRequest) -> None:
        """Applies the fill the paper broker will make for `order`: its reference price under the
        same cost model. The live service trades on this and keeps the order in flight until the
        broker's answer is read back (`on_broker_answer`)."""
        st = self.state(order.symbol)
        st.in_flight.append(
            InFlight(
                order_id=order.id,
                reason=order.reason,
                side=order.side,
                qty=order.qty,
                ref_price=order.ref_price,
                entry_price=st.entry_price,
                best_price=st.best_price,
            )
        )
        self._apply_assumed(st.in_flight[-1], order.symbol)
        if sum(len(state.in_flight) for state in self.symbols.values()) > MAX_TRACKED_IN_FLIGHT:
            self._untrack_oldest()

    def on_broker_answer(self, order: OrderRequest, *, filled: bool) -> None:
        """The broker filled or refused `order`, which this instance assumed filled.

        A refusal is undone, and the orders still in flight behind it are checked against the
        broker's position rule: an exit of an entry that was refused will be refused too, so it is
        undone now rather than leaving a phantom position for the stops to trade on meanwhile."""
        st = self.state(order.symbol)
        if not filled:
            self.counters.rejected_fills += 1
        index = next((i for i, f in enumerate(st.in_flight) if f.order_id == order.id), None)
        if index is None:
            # Untracked (past MAX_TRACKED_IN_FLIGHT, or sent by an instance whose snapshot predates
            # in-flight tracking): a refusal is undone as is.
            if not filled:
                self._undo_assumed(
                    st, InFlight(order.id, order.reason, order.side, order.qty, order.ref_price)
                )
            return
        answered = st.in_flight.pop(index)
        if answered.doomed == (not filled):
            return  # as assumed, or refused as predicted (and undone then)
        if filled:
            self._apply_assumed(answered, order.symbol)  # predicted refused, but it filled
        else:
            self._undo_assumed(st, answered)
        self._predict_in_flight(st, order.symbol)

    # -- internals -------------------------------------------------------------------------------
    def _apply_assumed(self, order: InFlight, symbol: str) -> None:
        executed, fee = self.costs.execute(order.side.sign, order.qty, order.ref_price)
        self.on_fill(order.side, order.qty, executed, fee, symbol)

    def _undo_assumed(self, st: SymbolState, order: InFlight) -> None:
        """Moves cash and quantity back by what the assumed fill moved them (additive, so undoing
        several orders gives the same book whatever the order they are undone in)."""
        executed, fee = self.costs.execute(order.side.sign, order.qty, order.ref_price)
        signed = order.side.sign * order.qty
        self.cash += signed * executed + fee
        st.qty -= signed
        if abs(st.qty) < 1e-12:
            st.qty = 0.0
            st.entry_price = 0.0
            st.best_price = 0.0
        elif st.entry_price == 0.0:
            # A refused exit: the position is back, with the entry and best price it had.
            st.entry_price = order.entry_price or executed
            st.best_price = order.best_price or executed

    def _untrack_oldest(self) -> None:
        """Stops tracking the oldest order in flight of the symbol with the most: assumed filled
        again if it was predicted refused, so that its answer applies as is whenever it comes."""
        symbol, st = max(self.symbols.items(), key=lambda item: len(item[1].in_flight))
        oldest = st.in_flight.pop(0)
        if oldest.doomed:
            self._apply_assumed(oldest, symbol)
        self.counters.untracked_orders += 1

    def _predict_in_flight(self, st: SymbolState, symbol: str) -> None:
        """Re-decides which orders in flight the broker will refuse by its position rule, starting
        from the broker's position (this instance's, less every order in flight it assumed)."""
        position = st.qty - sum(f.side.sign * f.qty for f in st.in_flight if not f.doomed)
        for flight in st.in_flight:
            refused = position_refusal(flight.reason, flight.side, flight.qty, position) is not None
            if refused and not flight.doomed:
                flight.doomed = True
                self._undo_assumed(st, flight)
            elif not refused and flight.doomed:
                flight.doomed = False
                self._apply_assumed(flight, symbol)
            if not refused:
                position += flight.side.sign * flight.qty

    def _roll_day(self, ts: datetime) -> None:
        if self.params.risk.max_daily_loss_pct is None:
            return
        day = day_of(ts)
        if day != self.day:
            self.day = day
            self.day_start_equity = self.equity()

    def _cash_after_exit(self, position: float, price: float) -> float:
        """Cash once `position` is closed at `price` under the cost model (for sizing the next entry)."""
        exit_price, fee = self.costs.execute(-1 if position > 0.0 else 1, abs(position), price)
        return self.cash + position * exit_price - fee

    @staticmethod
    def _move_best(st: SymbolState, high: float, low: float) -> None:
        if st.qty > 0.0 and high > st.best_price:
            st.best_price = high
        elif st.qty < 0.0 and low < st.best_price:
            st.best_price = low

    def _stop_order(
        self,
        symbol: str,
        st: SymbolState,
        open_: float,
        high: float,
        low: float,
        ts: datetime,
        cause: str,
        *,
        upcoming_bar: bool = False,
    ) -> OrderRequest | None:
        p = self.params
        long = st.qty > 0.0
        stop = math.nan
        stop_reason = OrderReason.STOP_LOSS
        if p.stop_loss_pct is not None:
            stop = (
                st.entry_price * (1.0 - p.stop_loss_pct / 100.0)
                if long
                else st.entry_price * (1.0 + p.stop_loss_pct / 100.0)
            )
        if p.trailing_stop_pct is not None:
            trail = (
                st.best_price * (1.0 - p.trailing_stop_pct / 100.0)
                if long
                else st.best_price * (1.0 + p.trailing_stop_pct / 100.0)
            )
            if math.isnan(stop) or (trail > stop if long else trail < stop):
                stop, stop_reason = trail, OrderReason.TRAILING_STOP
        target = math.nan
        if p.take_profit_pct is not None:
            target = (
                st.entry_price * (1.0 + p.take_profit_pct / 100.0)
                if long
                else st.entry_price * (1.0 - p.take_profit_pct / 100.0)
            )

        exit_at = math.nan
        reason = stop_reason
        if long:
            if open_ <= stop:
                exit_at = open_
            elif open_ >= target:
                exit_at, reason = open_, OrderReason.TAKE_PROFIT
            elif low <= stop:
                exit_at = stop
            elif high >= target:
                exit_at, reason = target, OrderReason.TAKE_PROFIT
        else:
            if open_ >= stop:
                exit_at = open_
            elif open_ <= target:
                exit_at, reason = open_, OrderReason.TAKE_PROFIT
            elif high >= stop:
                exit_at = stop
            elif low <= target:
                exit_at, reason = target, OrderReason.TAKE_PROFIT
        if math.isnan(exit_at):
            return None
        if reason in _STOP_REASONS and self.params.risk.cooldown_bars > 0:
            # The intrabar check runs before the bar's close event increments the bar index.
            st.cooldown_until = st.bar_index + (1 if upcoming_bar else 0) + self.params.risk.cooldown_bars
        side = Side.SELL if long else Side.BUY
        return self._order(symbol, side, abs(st.qty), reason, exit_at, ts, cause, leg=0)

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
        if self.halted:
            self.counters.blocked_halted += 1
            return None
        if st.bar_index <= st.cooldown_until:
            self.counters.blocked_cooldown += 1
            return None
        other_value = 0.0
        other_gross = 0.0
        for name, other in self.symbols.items():
            if name != symbol and other.qty != 0.0:
                other_value += other.qty * other.last_price
                other_gross += abs(other.qty * other.last_price)
        equity = cash_after + other_value
        limits = self.params.risk
        if limits.max_daily_loss_pct is not None and equity < self.day_start_equity * (
            1.0 - limits.max_daily_loss_pct / 100.0
        ):
            self.counters.blocked_daily_loss += 1
            return None
        qty = entry_size(
            self.params,
            self.costs,
            want,
            price,
            cash_after,
            equity,
            other_gross,
        )
        if not qty > 0.0:
            self.counters.blocked_size += 1
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


def entry_size(
    params: StrategyParams,
    costs: Costs,
    want: int,
    price: float,
    cash: float,
    equity: float,
    other_gross: float,
) -> float:
    """Units to buy (want=+1) or sell short (-1) at `price`, after every sizing rule and risk cap.
    The fast kernel mirrors this function operation for operation."""
    entry_price = fill_price(want, price, costs.slippage_bps)
    sizing = params.sizing
    value = 0.0 if sizing.value is None else sizing.value
    if sizing.kind == "all-in":
        budget = cash if cash < equity else equity
        qty = (budget - costs.commission_fixed) / (entry_price * (1.0 + costs.commission_pct / 100.0))
    elif sizing.kind == "qty":
        qty = value
    elif sizing.kind == "notional":
        qty = value / entry_price
    elif sizing.kind == "equity-pct":
        qty = equity * value / 100.0 / entry_price
    else:  # risk-pct: lose `value`% of equity if the stop is hit
        stop_pct = 1.0 if params.stop_loss_pct is None else params.stop_loss_pct
        qty = equity * value / 100.0 / (entry_price * stop_pct / 100.0)
    limits = params.risk
    cap = (limits.max_gross_exposure * equity - other_gross) / entry_price
    if qty > cap:
        qty = cap
    if limits.max_position_qty is not None and qty > limits.max_position_qty:
        qty = limits.max_position_qty
    if limits.max_position_notional is not None and qty > limits.max_position_notional / entry_price:
        qty = limits.max_position_notional / entry_price
    return floor_to_step(qty, params.qty_step)
