"""Sizing: how many units an entry buys or sells short, after every sizing rule and risk cap.

A rule function (see `tradebot.core.rules`): the backtest kernel compiles this very function.
"""

from __future__ import annotations

import math

from tradebot.core.costs import fill_price, floor_to_step
from tradebot.core.rules import Rules, SizingCode


def entry_size(
    rules: Rules, want: int, price: float, cash: float, equity: float, other_gross: float
) -> float:
    """Units to buy (`want` = +1) or sell short (-1) at `price`, given the cash and equity the entry
    would start from and the gross value held in other symbols; may be 0 (no entry)."""
    entry_price = fill_price(want, price, rules.slippage_bps)
    code = rules.sizing
    if code == SizingCode.ALL_IN:
        budget = cash if cash < equity else equity
        qty = (budget - rules.commission_fixed) / (entry_price * (1.0 + rules.commission_pct / 100.0))
    elif code == SizingCode.QTY:
        qty = rules.sizing_value
    elif code == SizingCode.NOTIONAL:
        qty = rules.sizing_value / entry_price
    elif code == SizingCode.EQUITY_PCT:
        qty = equity * rules.sizing_value / 100.0 / entry_price
    elif code == SizingCode.RISK_PCT:
        # Lose `sizing_value`% of equity if the stop-loss is hit.
        stop_pct = 1.0 if math.isnan(rules.stop_loss_pct) else rules.stop_loss_pct
        qty = equity * rules.sizing_value / 100.0 / (entry_price * stop_pct / 100.0)
    else:
        raise ValueError("unknown sizing code")
    cap = (rules.max_gross_exposure * equity - other_gross) / entry_price
    if qty > cap:
        qty = cap
    if qty > rules.max_position_qty:
        qty = rules.max_position_qty
    if qty > rules.max_position_notional / entry_price:
        qty = rules.max_position_notional / entry_price
    return floor_to_step(qty, rules.qty_step)
