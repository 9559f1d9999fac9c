"""Turns a sequence of fills into round-trip trades; shared by the reference engine and the kernel's
result decoding so both report trades the same way."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tradebot.core.models import OrderReason
from tradebot.core.rules import ExitCode, exit_reason

TRADE_COLUMNS = (
    "entry_time",
    "exit_time",
    "entry_bar",
    "exit_bar",
    "side",
    "qty",
    "entry_price",
    "exit_price",
    "pnl",
    "return_pct",
    "exit_reason",
    "commission",
)

# Exit reasons by `ExitCode`, as the kernel stores them; the strings are `OrderReason` values.
EXIT_REASONS: tuple[str, ...] = tuple(exit_reason(code).value for code in ExitCode)


@dataclass
class TradeLog:
    """Open position (at most one: entries happen only when flat) and the closed trades."""

    entry_bar: list[int] = field(default_factory=list)
    exit_bar: list[int] = field(default_factory=list)
    side: list[int] = field(default_factory=list)
    qty: list[float] = field(default_factory=list)
    entry_price: list[float] = field(default_factory=list)
    exit_price: list[float] = field(default_factory=list)
    pnl: list[float] = field(default_factory=list)
    exit_reason: list[int] = field(default_factory=list)
    commission: list[float] = field(default_factory=list)
    _open: tuple[int, int, float, float, float] | None = None  # bar, side, qty, price, fee

    def record(self, bar: int, side: int, qty: float, price: float, fee: float, reason: OrderReason) -> None:
        """A fill: it opens the trade, or closes it (then `reason` says why)."""
        if self._open is None:
            self._open = (bar, side, qty, price, fee)
            return
        entry_bar, entry_side, entry_qty, entry_price, entry_fee = self._open
        if side == entry_side:
            raise ValueError("the strategy never adds to an open position")
        self._open = None
        self.entry_bar.append(entry_bar)
        self.exit_bar.append(bar)
        self.side.append(entry_side)
        self.qty.append(entry_qty)
        self.entry_price.append(entry_price)
        self.exit_price.append(price)
        self.pnl.append(entry_side * (price - entry_price) * entry_qty - entry_fee - fee)
        self.exit_reason.append(ExitCode[reason.name])
        self.commission.append(entry_fee + fee)


def trades_frame(
    index: pd.DatetimeIndex,
    entry_bar: np.ndarray,
    exit_bar: np.ndarray,
    side: np.ndarray,
    qty: np.ndarray,
    entry_price: np.ndarray,
    exit_price: np.ndarray,
    pnl: np.ndarray,
    exit_reason: np.ndarray,
    commission: np.ndarray,
) -> pd.DataFrame:
    entry_bar = np.asarray(entry_bar, dtype=np.int64)
    exit_bar = np.asarray(exit_bar, dtype=np.int64)
    qty = np.asarray(qty, dtype=np.float64)
    entry_price = np.asarray(entry_price, dtype=np.float64)
    pnl = np.asarray(pnl, dtype=np.float64)
    notional = qty * entry_price
    with np.errstate(divide="ignore", invalid="ignore"):
        return_pct = np.where(notional > 0, pnl / notional * 100.0, np.nan)
    return pd.DataFrame(
        {
            "entry_time": index[entry_bar] if len(entry_bar) else pd.DatetimeIndex([], tz="UTC"),
            "exit_time": index[exit_bar] if len(exit_bar) else pd.DatetimeIndex([], tz="UTC"),
            "entry_bar": entry_bar,
            "exit_bar": exit_bar,
            "side": np.where(np.asarray(side) > 0, "long", "short"),
            "qty": qty,
            "entry_price": entry_price,
            "exit_price": np.asarray(exit_price, dtype=np.float64),
            "pnl": pnl,
            "return_pct": return_pct,
            "exit_reason": np.asarray(EXIT_REASONS, dtype=object)[np.asarray(exit_reason, dtype=np.int64)]
            if len(exit_reason)
            else np.array([], dtype=object),
            "commission": np.asarray(commission, dtype=np.float64),
        },
        columns=list(TRADE_COLUMNS),
    )
