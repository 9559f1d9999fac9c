"""The paper broker's decisions: pre-trade risk checks, fills under the shared cost model, positions.

Pure (no I/O): the runner feeds it orders and the latest prices, and rebuilds it from the `fills`
topic on start, so its book always equals what the topic says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from tradebot.adapters.topics import FillRecord
from tradebot.core.costs import Costs
from tradebot.core.models import (
    ENTRY_REASONS,
    Fill,
    FillStatus,
    OrderRequest,
    Position,
    RejectCode,
    position_refusal,
)

POSITION_REFUSALS = {
    RejectCode.IN_POSITION: "already in a position",
    RejectCode.NO_POSITION: "no position to close",
}


@dataclass(frozen=True)
class RiskChecks:
    max_order_qty: float | None = None
    max_order_notional: float | None = None
    # Reject an order whose reference price is further than this from the last traded price (None: off).
    price_band_pct: float | None = None


@dataclass
class Book:
    qty: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    commissions: float = 0.0
    last_price: float = 0.0

    def apply(self, side_sign: int, qty: float, price: float, fee: float) -> None:
        signed = side_sign * qty
        self.commissions += fee
        self.last_price = price
        if self.qty == 0.0 or (self.qty > 0) == (signed > 0):
            total = abs(self.qty) + qty
            self.avg_price = (abs(self.qty) * self.avg_price + qty * price) / total
            self.qty += signed
            return
        closing = min(abs(self.qty), qty)
        self.realized += closing * (price - self.avg_price) * (1.0 if self.qty > 0 else -1.0)
        self.qty += signed
        if abs(self.qty) < 1e-12:
            self.qty = 0.0
            self.avg_price = 0.0
        elif (self.qty > 0) == (signed > 0):
            self.avg_price = price  # flipped through zero: the rest opened at this price

    def position(self, strategy_id: str, symbol: str, ts: datetime, mark: float | None = None) -> Position:
        price = self.last_price if mark is None else mark
        unrealized = self.qty * (price - self.avg_price) if self.qty != 0.0 else 0.0
        return Position(
            strategy_id=strategy_id,
            symbol=symbol,
            qty=self.qty,
            avg_price=self.avg_price,
            realized_pnl=self.realized,
            unrealized_pnl=unrealized,
            commissions=self.commissions,
            last_price=price,
            ts=ts,
        )


# Order ids the broker remembers to drop a repeated order: orders are consumed transactionally (each
# order's offset is committed with its fill), so a repeat can only come from a producer re-sending one
# recently (a strategy replaying its uncommitted batch), never from far back.
DEFAULT_SEEN_MAX = 100_000


@dataclass
class PaperBroker:
    costs: Costs
    checks: RiskChecks = field(default_factory=RiskChecks)
    books: dict[tuple[str, str], Book] = field(default_factory=dict)
    # The newest `seen_max` order ids handled, oldest first (a dict keeps insertion order): a bounded ring.
    seen: dict[str, None] = field(default_factory=dict)
    seen_max: int = DEFAULT_SEEN_MAX

    def book(self, strategy_id: str, symbol: str) -> Book:
        return self.books.setdefault((strategy_id, symbol), Book())

    def remember(self, order_id: str) -> None:
        self.seen[order_id] = None
        while len(self.seen) > self.seen_max:
            del self.seen[next(iter(self.seen))]

    def restore(self, position: Position) -> None:
        """Sets a book from its position as the `positions` topic holds it (start-up rebuild)."""
        self.books[(position.strategy_id, position.symbol)] = Book(
            qty=position.qty,
            avg_price=position.avg_price,
            realized=position.realized_pnl,
            commissions=position.commissions,
            last_price=position.last_price,
        )

    def replay(self, record: FillRecord) -> None:
        """Re-applies a fill read back from the `fills` topic (start-up rebuild)."""
        self.remember(record.order.id)
        if record.fill.status is FillStatus.FILLED:
            self.book(record.order.strategy_id, record.order.symbol).apply(
                record.fill.side.sign, record.fill.qty, record.fill.price, record.fill.commission
            )

    def execute(
        self, order: OrderRequest, *, now: datetime, halted: bool, last_price: float | None
    ) -> FillRecord | None:
        """The fill (or refusal) for `order`; None when this order id was already handled."""
        if order.id in self.seen:
            return None
        self.remember(order.id)
        book = self.book(order.strategy_id, order.symbol)
        refusal = self._refusal(order, book, halted, last_price)
        if refusal is not None:
            fill = Fill(
                order_id=order.id,
                strategy_id=order.strategy_id,
                symbol=order.symbol,
                side=order.side,
                qty=0.0,
                price=0.0,
                ts=now,
                status=FillStatus.REJECTED,
                reason=order.reason,
                reject_code=refusal[0],
                reject_reason=refusal[1],
            )
            return FillRecord(
                order=order, fill=fill, position=book.position(order.strategy_id, order.symbol, now)
            )
        executed, fee = self.costs.execute(order.side.sign, order.qty, order.ref_price)
        book.apply(order.side.sign, order.qty, executed, fee)
        fill = Fill(
            order_id=order.id,
            strategy_id=order.strategy_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            price=executed,
            commission=fee,
            ts=now,
            reason=order.reason,
        )
        return FillRecord(
            order=order, fill=fill, position=book.position(order.strategy_id, order.symbol, now)
        )

    def _refusal(
        self, order: OrderRequest, book: Book, halted: bool, last_price: float | None
    ) -> tuple[RejectCode, str] | None:
        entry = order.reason in ENTRY_REASONS
        if halted and entry:
            return RejectCode.HALTED, "strategy halted"
        if self.checks.max_order_qty is not None and order.qty > self.checks.max_order_qty:
            return (
                RejectCode.MAX_QTY,
                f"qty {order.qty:g} exceeds max order qty {self.checks.max_order_qty:g}",
            )
        notional = order.qty * order.ref_price
        if self.checks.max_order_notional is not None and notional > self.checks.max_order_notional:
            return (
                RejectCode.MAX_NOTIONAL,
                f"notional {notional:.2f} exceeds max order notional {self.checks.max_order_notional:.2f}",
            )
        band = self.checks.price_band_pct
        if band is not None and last_price is not None and last_price > 0:
            off = abs(order.ref_price - last_price) / last_price * 100.0
            if off > band:
                return (
                    RejectCode.PRICE_BAND,
                    f"price {order.ref_price:g} is {off:.2f}% from the last price {last_price:g} (band {band:g}%)",
                )
        code = position_refusal(order.reason, order.side, order.qty, book.qty)
        if code is not None:
            return code, POSITION_REFUSALS[code]
        if not math.isfinite(notional):
            return RejectCode.NOT_FINITE, "notional is not finite"
        return None
