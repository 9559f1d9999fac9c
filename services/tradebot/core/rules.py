"""The strategy's rules as one flat record of numbers (`Rules`), and the named codes its rule functions use.

The rule functions (`signals`, `risk`, `sizing`, `book`) are written once and run twice: as Python in
`CrossoverStrategy` and, compiled by numba, in the backtest kernel. So everything they take is a
number, an `IntEnum` or this NamedTuple, never None: "no limit" is NaN for a percentage and infinity
for a cap. Codes are derived from names (`SizingCode.EQUITY_PCT` is sizing kind `equity-pct`,
`ExitCode.STOP_LOSS` is `OrderReason.STOP_LOSS`), so there is no table of numbers to keep in step.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Final, NamedTuple

from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason
from tradebot.core.params import ExitRule, SizingKind, StrategyParams


class SizingCode(IntEnum):
    """`Sizing.kind` as a number; the member's name is the kind in upper case, `-` as `_`."""

    ALL_IN = 0
    QTY = 1
    NOTIONAL = 2
    EQUITY_PCT = 3
    RISK_PCT = 4


def sizing_code(kind: SizingKind) -> SizingCode:
    return SizingCode[kind.upper().replace("-", "_")]


class ExitRuleCode(IntEnum):
    """`StrategyParams.exit_rule` as a number; the member's name is the rule in upper case, `-` as `_`."""

    STOP_FIRST = 0
    TARGET_FIRST = 1
    OPEN_NEAREST = 2


def exit_rule_code(rule: ExitRule) -> ExitRuleCode:
    return ExitRuleCode[rule.upper().replace("-", "_")]


class ExitCode(IntEnum):
    """Why a position closed, as a number (the kernel's trade table stores it); named as `OrderReason`."""

    EXIT_CROSS = 0
    STOP_LOSS = 1
    TAKE_PROFIT = 2
    TRAILING_STOP = 3
    END_OF_DATA = 4


NO_EXIT: Final = -1  # what `risk.stop_exit` answers when no stop is hit


def exit_reason(code: int) -> OrderReason:
    return OrderReason[ExitCode(code).name]


class Rules(NamedTuple):
    """`StrategyParams` (less the moving averages, which are computed apart) and `Costs`, as numbers."""

    allow_short: bool
    stop_loss_pct: float  # NaN: none (all percentages)
    take_profit_pct: float
    trailing_stop_pct: float
    exit_rule: ExitRuleCode  # a bar that reaches both the stop and the take-profit
    sizing: SizingCode
    sizing_value: float  # 0 for all-in
    qty_step: float
    max_gross_exposure: float
    max_position_qty: float  # infinity: none (both caps)
    max_position_notional: float
    max_daily_loss_pct: float
    cooldown_bars: int
    commission_pct: float
    commission_fixed: float
    slippage_bps: float

    @classmethod
    def of(cls, params: StrategyParams, costs: Costs) -> Rules:
        risk = params.risk
        return cls(
            allow_short=params.allow_short,
            stop_loss_pct=_pct(params.stop_loss_pct),
            take_profit_pct=_pct(params.take_profit_pct),
            trailing_stop_pct=_pct(params.trailing_stop_pct),
            exit_rule=exit_rule_code(params.exit_rule),
            sizing=sizing_code(params.sizing.kind),
            sizing_value=0.0 if params.sizing.value is None else params.sizing.value,
            qty_step=params.qty_step,
            max_gross_exposure=risk.max_gross_exposure,
            max_position_qty=_cap(risk.max_position_qty),
            max_position_notional=_cap(risk.max_position_notional),
            max_daily_loss_pct=_pct(risk.max_daily_loss_pct),
            cooldown_bars=risk.cooldown_bars,
            commission_pct=costs.commission_pct,
            commission_fixed=costs.commission_fixed,
            slippage_bps=costs.slippage_bps,
        )


def _pct(value: float | None) -> float:
    return math.nan if value is None else value


def _cap(value: float | None) -> float:
    return math.inf if value is None else value
