"""The book: cash and one holding per symbol, changed only by fills.

`execute`, `after_fill` and `cash_after_exit` are rule functions (see `tradebot.core.rules`): the
backtest kernel compiles these very functions for its own one-symbol book.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tradebot.core.costs import commission, fill_price
from tradebot.core.rules import Rules

# A position this close to zero is closed (float residue of a fill that closed it).
FLAT = 1e-12


def execute(rules: Rules, side: int, qty: float, price: float) -> tuple[float, float]:
    """(price actually paid (buy, +1) or received (sell, -1), commission) for `qty` at `price`."""
    executed = fill_price(side, price, rules.slippage_bps)
    return executed, commission(qty, executed, rules.commission_pct, rules.commission_fixed)


def after_fill(
    qty: float, entry_price: float, best_price: float, signed: float, price: float
) -> tuple[float, float, float]:
    """(qty, entry price, best price) after `signed` units fill at `price`: a fill from flat opens a
    position at `price`; the strategy never adds to one, so any other fill reduces or closes it."""
    if qty == 0.0:
        return signed, price, price
    qty += signed
    if abs(qty) < FLAT:
        return 0.0, 0.0, 0.0
    return qty, entry_price, best_price


def cash_after_exit(rules: Rules, cash: float, position: float, price: float) -> float:
    """Cash once `position` is closed at `price` under the cost model (what the next entry is sized from)."""
    exit_price, fee = execute(rules, -1 if position > 0.0 else 1, abs(position), price)
    return cash + position * exit_price - fee


@dataclass
class Holding:
    qty: float = 0.0  # signed: < 0 is short
    entry_price: float = 0.0
    best_price: float = 0.0  # highest since entry when long, lowest when short
    last_price: float = math.nan


@dataclass
class Book:
    cash: float
    holdings: dict[str, Holding] = field(default_factory=dict)

    def holding(self, symbol: str) -> Holding:
        found = self.holdings.get(symbol)
        if found is None:
            found = self.holdings[symbol] = Holding()
        return found

    def position(self, symbol: str) -> float:
        """The quantity held in `symbol` (negative when short); safe to call from another thread."""
        found = self.holdings.get(symbol)
        return found.qty if found is not None else 0.0

    def equity(self) -> float:
        """Cash plus every position marked at its last price."""
        total = self.cash
        for held in self.holdings.values():
            if held.qty != 0.0:
                total += held.qty * held.last_price
        return total

    def others(self, symbol: str) -> tuple[float, float]:
        """(net value, gross value) of the positions in every symbol but `symbol`."""
        value = 0.0
        gross = 0.0
        for name, held in self.holdings.items():
            if name != symbol and held.qty != 0.0:
                value += held.qty * held.last_price
                gross += abs(held.qty * held.last_price)
        return value, gross

    def fill(self, symbol: str, signed: float, price: float, fee: float) -> None:
        """`signed` units (< 0 sold) filled at `price` (slippage included), paying `fee`."""
        held = self.holding(symbol)
        self.cash -= signed * price + fee
        held.qty, held.entry_price, held.best_price = after_fill(
            held.qty, held.entry_price, held.best_price, signed, price
        )

    def unfill(
        self, symbol: str, signed: float, price: float, fee: float, entry_price: float, best_price: float
    ) -> None:
        """Takes back a fill made by `fill` (live: the broker refused an order assumed filled).

        Additive, so taking back several fills gives the same book whatever their order. A position
        that comes back (a refused exit) gets the entry and best price it had, when they are known."""
        held = self.holding(symbol)
        self.cash += signed * price + fee
        held.qty -= signed
        if abs(held.qty) < FLAT:
            held.qty = 0.0
            held.entry_price = 0.0
            held.best_price = 0.0
        elif held.entry_price == 0.0:
            held.entry_price = entry_price or price
            held.best_price = best_price or price
