"""The live strategy: `CrossoverStrategy` plus the orders it sent that the broker has not answered yet.

The live service trades on the fill it assumes the paper broker will make (the order's reference
price under the same cost model) and keeps each such order in flight until the broker's answer is
read back from `fills`. A refusal is undone, and the orders still in flight behind it are checked
against the broker's position rule: an exit of an entry that was refused will be refused too, so it
is undone at once rather than leaving a phantom position for the stops to trade on meanwhile.
The backtester fills its orders itself and never needs this.

A person's force-exit (`force_exit_once`) is executed once per command id: the ids handled are part of
the snapshot, so a command read again (a client's retry, after a restart too) makes no second exit. Its
order id is seeded by the command and the order that opened the position it closes: were the same
command to close a later position (a snapshot from before handled ids were kept), its exit would not
share the first exit's id, which the executor drops as a duplicate while this instance assumed it filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from tradebot.core.models import ENTRY_REASONS, OrderReason, OrderRequest, Side, position_refusal
from tradebot.core.strategy import CrossoverStrategy

# Orders in flight tracked per strategy. A live executor answers within a few hundred ms, so a
# handful are in flight; more means it is not answering, and the snapshot (one Kafka record per
# transaction) must stay small. Past this the oldest is no longer tracked: its answer is applied
# as it comes, without re-checking the orders behind it.
MAX_TRACKED_IN_FLIGHT = 100
# Force-exit commands remembered as handled (the newest): a person's retries come within minutes.
MAX_HANDLED_COMMANDS = 500


def force_exit_cause(command_id: str, entry_order_id: str) -> str:
    """A force-exit order's cause (with the strategy and symbol, its id): the command, and the order that
    opened the position it closes (empty when unknown: a snapshot from before they were kept)."""
    return f"force-exit:{command_id}" + (f":{entry_order_id}" if entry_order_id else "")


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
        # Written out, not `dataclasses.asdict` (which deep-copies field by field): every batch snapshots
        # the orders in flight of each symbol it touched, and asdict was half of the snapshot's time.
        return {
            "order_id": self.order_id,
            "reason": self.reason,  # the enums are strings: JSON keeps their values
            "side": self.side,
            "qty": self.qty,
            "ref_price": self.ref_price,
            "entry_price": self.entry_price,
            "best_price": self.best_price,
            "doomed": self.doomed,
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> InFlight:
        return cls(**{**state, "reason": OrderReason(state["reason"]), "side": Side(state["side"])})


@dataclass
class LiveStrategy(CrossoverStrategy):
    in_flight: dict[str, list[InFlight]] = field(default_factory=dict)  # per symbol, in the order sent
    entry_ids: dict[str, str] = field(default_factory=dict)  # per symbol: the order that opened the position
    handled_commands: list[str] = field(default_factory=list)  # force-exit command ids, oldest first
    tick_times: dict[str, datetime] = field(default_factory=dict)  # per symbol: the last tick's time

    def note_tick(self, symbol: str, ts: datetime) -> None:
        """A tick of `symbol` at `ts` was traded on (not late): the time a force-exit is stamped with."""
        self.tick_times[symbol] = ts

    def force_exit_once(self, command_id: str, symbol: str, requested: datetime) -> OrderRequest | None:
        """The exit a force-exit command makes in `symbol` (None: nothing open), keyed by the command and
        the position's entry order. None for a command already handled (`remember_command`).

        The order is stamped with the time of the last tick, whose price it exits at, as every order of
        the strategy is stamped with its price's event time (the trades and the equity curve are in event
        time; a replay's force-exit stamped with the request's wall-clock time closed a 2012 trade in
        2026). `requested` (the command's time) only when no tick has been seen since the start."""
        if command_id in self.handled_commands:
            return None
        ts = self.tick_times.get(symbol, requested)
        return self.force_exit(symbol, ts, force_exit_cause(command_id, self.entry_ids.get(symbol, "")))

    def remember_command(self, command_id: str) -> None:
        if command_id not in self.handled_commands:
            self.handled_commands.append(command_id)
            del self.handled_commands[:-MAX_HANDLED_COMMANDS]

    def orders_in_flight(self, symbol: str) -> list[InFlight]:
        self.state(symbol)
        return self.in_flight.setdefault(symbol, [])

    def assume_filled(self, order: OrderRequest) -> None:
        """Applies the fill the paper broker will make for `order` and keeps the order in flight
        until the broker's answer is read back (`on_broker_answer`)."""
        flights = self.orders_in_flight(order.symbol)
        held = self.book.holding(order.symbol)
        flights.append(
            InFlight(
                order_id=order.id,
                reason=order.reason,
                side=order.side,
                qty=order.qty,
                ref_price=order.ref_price,
                entry_price=held.entry_price,
                best_price=held.best_price,
            )
        )
        self._apply_assumed(order.symbol, flights[-1])
        if sum(len(orders) for orders in self.in_flight.values()) > MAX_TRACKED_IN_FLIGHT:
            self._untrack_oldest()

    def on_broker_answer(self, order: OrderRequest, *, filled: bool) -> None:
        """The broker filled or refused `order`, which this instance assumed filled."""
        flights = self.orders_in_flight(order.symbol)
        if not filled:
            self.counters.rejected_fills += 1
        index = next((i for i, f in enumerate(flights) if f.order_id == order.id), None)
        if index is None:
            # Untracked (past MAX_TRACKED_IN_FLIGHT, or sent by an instance whose snapshot predates
            # in-flight tracking): a refusal is undone as is.
            if not filled:
                self._undo_assumed(
                    order.symbol, InFlight(order.id, order.reason, order.side, order.qty, order.ref_price)
                )
            return
        answered = flights.pop(index)
        if answered.doomed == (not filled):
            return  # as assumed, or refused as predicted (and undone then)
        if filled:
            self._apply_assumed(order.symbol, answered)  # predicted refused, but it filled
        else:
            self._undo_assumed(order.symbol, answered)
        self._predict_in_flight(order.symbol)

    # -- snapshot --------------------------------------------------------------------------------
    def head_snapshot(self) -> dict[str, Any]:
        head = super().head_snapshot()
        if self.handled_commands:  # only then: a strategy never force-exited writes the format it always did
            head["handled_commands"] = list(self.handled_commands)
        return head

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.head_snapshot(),
            "symbols": {name: self.symbol_snapshot(name) for name in sorted(self.symbols)},
        }

    def symbol_snapshot(self, symbol: str) -> dict[str, Any]:
        """One symbol's part of `snapshot()`: what the live service stores as a record of its own."""
        state = self._symbol_snapshot(symbol)
        state["in_flight"] = [order.snapshot() for order in self.in_flight.get(symbol, [])]
        if symbol in self.entry_ids:
            state["entry_id"] = self.entry_ids[symbol]
        if symbol in self.tick_times:
            state["tick_time"] = self.tick_times[symbol].isoformat()
        return state

    @classmethod
    def restore(cls, snap: dict[str, Any]) -> Self:
        strategy = super().restore(snap)
        for name, state in snap["symbols"].items():
            # Absent from snapshots written before orders in flight were tracked.
            strategy.in_flight[name] = [InFlight.restore(order) for order in state.get("in_flight", [])]
            if state.get("entry_id"):  # absent from snapshots written before force-exits were keyed by it
                strategy.entry_ids[name] = str(state["entry_id"])
            if state.get("tick_time"):
                strategy.tick_times[name] = datetime.fromisoformat(state["tick_time"])
        strategy.handled_commands = [str(c) for c in snap.get("handled_commands", [])]
        return strategy

    # -- internals -------------------------------------------------------------------------------
    def _apply_assumed(self, symbol: str, order: InFlight) -> None:
        executed, fee = self.costs.execute(order.side.sign, order.qty, order.ref_price)
        self.on_fill(order.side, order.qty, executed, fee, symbol)
        if order.reason in ENTRY_REASONS:
            self.entry_ids[symbol] = order.order_id

    def _undo_assumed(self, symbol: str, order: InFlight) -> None:
        executed, fee = self.costs.execute(order.side.sign, order.qty, order.ref_price)
        self.book.unfill(
            symbol, order.side.sign * order.qty, executed, fee, order.entry_price, order.best_price
        )

    def _untrack_oldest(self) -> None:
        """Stops tracking the oldest order in flight of the symbol with the most: assumed filled
        again if it was predicted refused, so that its answer applies as is whenever it comes."""
        symbol = max(self.symbols, key=lambda name: len(self.in_flight.get(name, ())))
        oldest = self.in_flight[symbol].pop(0)
        if oldest.doomed:
            self._apply_assumed(symbol, oldest)
        self.counters.untracked_orders += 1

    def _predict_in_flight(self, symbol: str) -> None:
        """Re-decides which orders in flight the broker will refuse by its position rule, starting
        from the broker's position (this instance's, less every order in flight it assumed)."""
        flights = self.orders_in_flight(symbol)
        position = self.book.position(symbol) - sum(f.side.sign * f.qty for f in flights if not f.doomed)
        for flight in flights:
            refused = position_refusal(flight.reason, flight.side, flight.qty, position) is not None
            if refused and not flight.doomed:
                flight.doomed = True
                self._undo_assumed(symbol, flight)
            elif not refused and flight.doomed:
                flight.doomed = False
                self._apply_assumed(symbol, flight)
            if not refused:
                position += flight.side.sign * flight.qty
