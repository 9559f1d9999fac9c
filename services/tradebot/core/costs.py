"""The fee and slippage model shared by the backtester, the strategy's own book and the paper broker."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class Costs(BaseModel):
    """Percent commission on notional plus a fixed fee per fill, and slippage against the trader."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commission_pct: float = Field(
        default=0.0, ge=0, le=10, description="Commission in percent of notional (0.1 = 0.1%)."
    )
    commission_fixed: float = Field(
        default=0.0, ge=0, description="Fixed commission per fill, in account currency."
    )
    slippage_bps: float = Field(
        default=0.0, ge=0, le=1000, description="Slippage in basis points, always against the trader."
    )

    def execute(self, side_sign: int, qty: float, price: float) -> tuple[float, float]:
        """(price actually paid (buy, +1) or received (sell, -1), commission) for `qty` at `price`."""
        executed = fill_price(side_sign, price, self.slippage_bps)
        return executed, commission(qty, executed, self.commission_pct, self.commission_fixed)


# Plain functions on numbers: the backtest kernel compiles them as they are (see tradebot.core.rules).
def fill_price(side_sign: int, price: float, slippage_bps: float) -> float:
    return price * (1.0 + side_sign * slippage_bps / 10_000.0)


def commission(qty: float, price: float, commission_pct: float, commission_fixed: float) -> float:
    if qty <= 0.0:
        return 0.0
    return abs(qty * price) * commission_pct / 100.0 + commission_fixed


def floor_to_step(qty: float, step: float) -> float:
    if step <= 0.0:
        return qty
    scaled = qty / step + 1e-9
    if scaled >= 4_503_599_627_370_496.0:
        # 2**52 and up a float is a whole number already; and compiled by numba math.floor would give an
        # int64, which overflows past 2**63 (prices near 0 size entries that big): the kernel then refused
        # entries the reference made.
        return scaled * step
    return math.floor(scaled) * step
