"""`Rules`: every strategy parameter and cost lands in its own field; codes are named after what they code."""

from __future__ import annotations

import math
from typing import Any, get_args

import pytest

from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason
from tradebot.core.params import EXIT_RULES, SIZING_KINDS, ExitRule, RiskLimits, SizingKind, StrategyParams
from tradebot.core.rules import (
    ExitCode,
    ExitRuleCode,
    Rules,
    SizingCode,
    exit_reason,
    exit_rule_code,
    sizing_code,
)

# Each parameter (`costs.` for a cost), a value to change it to, and the fields of `Rules` that must
# change with it, to what.
CHANGES: list[tuple[str, Any, dict[str, Any]]] = [
    ("allow_short", True, {"allow_short": True}),
    ("stop_loss_pct", 2.0, {"stop_loss_pct": 2.0}),
    ("take_profit_pct", 3.0, {"take_profit_pct": 3.0}),
    ("trailing_stop_pct", 4.0, {"trailing_stop_pct": 4.0}),
    ("exit_rule", "open-nearest", {"exit_rule": ExitRuleCode.OPEN_NEAREST}),
    ("sizing", "notional:500", {"sizing": SizingCode.NOTIONAL, "sizing_value": 500.0}),
    ("qty_step", 0.01, {"qty_step": 0.01}),
    ("risk.max_gross_exposure", 2.0, {"max_gross_exposure": 2.0}),
    ("risk.max_position_qty", 7.0, {"max_position_qty": 7.0}),
    ("risk.max_position_notional", 900.0, {"max_position_notional": 900.0}),
    ("risk.max_daily_loss_pct", 3.0, {"max_daily_loss_pct": 3.0}),
    ("risk.cooldown_bars", 4, {"cooldown_bars": 4}),
    ("costs.commission_pct", 0.2, {"commission_pct": 0.2}),
    ("costs.commission_fixed", 1.5, {"commission_fixed": 1.5}),
    ("costs.slippage_bps", 7.0, {"slippage_bps": 7.0}),
]
# Parameters that never reach `Rules`: they make the moving averages, computed before any rule runs.
MOVING_AVERAGE_PARAMETERS = {"ma_type", "short_window", "long_window"}
# Parameters the engines read themselves: the timeframe makes the bars (and whether stops see their range).
ENGINE_PARAMETERS = {"timeframe"}


def changed(path: str, value: Any) -> Rules:
    params: dict[str, Any] = StrategyParams().model_dump()
    costs: dict[str, Any] = Costs().model_dump()
    head, _, tail = path.partition(".")
    if head == "costs":
        costs[tail] = value
    elif tail:
        params[head][tail] = value
    else:
        params[head] = value
    return Rules.of(StrategyParams.model_validate(params), Costs.model_validate(costs))


@pytest.mark.parametrize(("path", "value", "fields"), CHANGES, ids=[path for path, _, _ in CHANGES])
def test_each_parameter_lands_in_its_own_field(path: str, value: Any, fields: dict[str, Any]) -> None:
    before = Rules.of(StrategyParams(), Costs())._asdict()
    after = changed(path, value)._asdict()
    moved = {name for name in after if repr(after[name]) != repr(before[name])}
    assert moved == set(fields), f"{path} changed {sorted(moved)}"
    assert {name: after[name] for name in fields} == fields


def test_no_parameter_and_no_field_is_left_out() -> None:
    """A new parameter must reach the rules (so the kernel sees it) or be declared as an input of
    the moving averages or of the engines; a new field of `Rules` must come from some parameter."""
    parameters = {name for name in StrategyParams.model_fields if name != "risk"}
    parameters |= {f"risk.{name}" for name in RiskLimits.model_fields}
    parameters |= {f"costs.{name}" for name in Costs.model_fields}
    assert parameters - MOVING_AVERAGE_PARAMETERS - ENGINE_PARAMETERS == {path for path, _, _ in CHANGES}
    assert set().union(*(fields for _, _, fields in CHANGES)) == set(Rules._fields)


def test_an_absent_limit_is_nan_for_a_percentage_and_infinite_for_a_cap() -> None:
    rules = Rules.of(StrategyParams(), Costs())
    for pct in ("stop_loss_pct", "take_profit_pct", "trailing_stop_pct", "max_daily_loss_pct"):
        assert math.isnan(getattr(rules, pct)), pct
    assert rules.max_position_qty == rules.max_position_notional == math.inf
    assert (rules.sizing, rules.sizing_value) == (SizingCode.ALL_IN, 0.0)


def test_sizing_codes_are_the_sizing_kinds_one_for_one() -> None:
    kinds = get_args(SizingKind)
    assert set(kinds) == set(SIZING_KINDS)
    codes = [sizing_code(kind) for kind in kinds]
    assert sorted(codes) == sorted(SizingCode), "a sizing kind without a code, or a code without a kind"
    for kind, code in zip(kinds, codes, strict=True):
        assert code.name.lower().replace("_", "-") == kind


def test_exit_codes_are_order_reasons() -> None:
    assert [exit_reason(code) for code in ExitCode] == [
        OrderReason.EXIT_CROSS,
        OrderReason.STOP_LOSS,
        OrderReason.TAKE_PROFIT,
        OrderReason.TRAILING_STOP,
        OrderReason.END_OF_DATA,
    ]
    with pytest.raises(ValueError, match="-1"):
        exit_reason(-1)


def test_exit_rule_codes_are_the_exit_rules_one_for_one() -> None:
    rules = get_args(ExitRule)
    assert set(rules) == set(EXIT_RULES)
    assert sorted(exit_rule_code(rule) for rule in rules) == sorted(ExitRuleCode)
    for rule in rules:
        assert exit_rule_code(rule).name.lower().replace("_", "-") == rule
