"""Risk rules on their own: which stop closes a position over a price range, and at what price; which
limit blocks an entry."""

from __future__ import annotations

import math

import pytest

from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams
from tradebot.core.risk import EntryBlock, cooldown_until, entry_block, stop_exit, trail
from tradebot.core.rules import NO_EXIT, ExitCode, Rules


def rules(**params: object) -> Rules:
    return Rules.of(StrategyParams.model_validate(params), Costs())


STOPS = rules(stop_loss_pct=10, take_profit_pct=20)  # long from 100: stop 90, target 120


@pytest.mark.parametrize(
    ("open_", "high", "low", "expected"),
    [
        (100.0, 110.0, 95.0, (NO_EXIT, math.nan)),
        (100.0, 101.0, 89.0, (ExitCode.STOP_LOSS, 90.0)),
        (85.0, 99.0, 80.0, (ExitCode.STOP_LOSS, 85.0)),  # gapped through the stop: the open
        (100.0, 125.0, 99.0, (ExitCode.TAKE_PROFIT, 120.0)),
        (125.0, 130.0, 121.0, (ExitCode.TAKE_PROFIT, 125.0)),  # gapped through the target: the open
        (100.0, 125.0, 85.0, (ExitCode.STOP_LOSS, 90.0)),  # both in the range: the stop first
    ],
)
def test_a_long_position_stops_over_a_bar(
    open_: float, high: float, low: float, expected: tuple[int, float]
) -> None:
    code, price = stop_exit(STOPS, 10.0, 100.0, 100.0, open_, high, low)
    assert code == expected[0]
    assert price == expected[1] or (math.isnan(price) and math.isnan(expected[1]))


def test_a_short_position_mirrors_it() -> None:
    code, price = stop_exit(STOPS, -10.0, 100.0, 100.0, 100.0, 111.0, 99.0)
    assert code == ExitCode.STOP_LOSS
    assert price == pytest.approx(110.0)
    assert stop_exit(STOPS, -10.0, 100.0, 100.0, 100.0, 101.0, 79.0) == (ExitCode.TAKE_PROFIT, 80.0)
    assert stop_exit(STOPS, -10.0, 100.0, 100.0, 100.0, 125.0, 75.0)[0] == ExitCode.STOP_LOSS


@pytest.mark.parametrize(
    ("exit_rule", "open_", "expected"),
    [
        # Long from 100 (stop 90, target 120), a bar from 85 to 125: which level came first is unknown.
        ("stop-first", 100.0, (ExitCode.STOP_LOSS, 90.0)),
        ("stop-first", 118.0, (ExitCode.STOP_LOSS, 90.0)),
        ("target-first", 100.0, (ExitCode.TAKE_PROFIT, 120.0)),
        ("target-first", 92.0, (ExitCode.TAKE_PROFIT, 120.0)),
        ("open-nearest", 100.0, (ExitCode.STOP_LOSS, 90.0)),  # 10 to the stop, 20 to the target
        ("open-nearest", 115.0, (ExitCode.TAKE_PROFIT, 120.0)),  # 25 to the stop, 5 to the target
        ("open-nearest", 105.0, (ExitCode.STOP_LOSS, 90.0)),  # as near: the stop
    ],
)
def test_a_bar_reaching_both_stop_and_target_exits_by_the_named_rule(
    exit_rule: str, open_: float, expected: tuple[int, float]
) -> None:
    both = rules(stop_loss_pct=10, take_profit_pct=20, exit_rule=exit_rule)
    assert stop_exit(both, 10.0, 100.0, 100.0, open_, 125.0, 85.0) == expected
    # Gaps through one level at the open fill there whatever the rule; a bar reaching one level exits there.
    assert stop_exit(both, 10.0, 100.0, 100.0, 80.0, 125.0, 75.0) == (ExitCode.STOP_LOSS, 80.0)
    assert stop_exit(both, 10.0, 100.0, 100.0, 130.0, 131.0, 85.0) == (ExitCode.TAKE_PROFIT, 130.0)
    assert stop_exit(both, 10.0, 100.0, 100.0, 100.0, 119.0, 85.0) == (ExitCode.STOP_LOSS, 90.0)
    assert stop_exit(both, 10.0, 100.0, 100.0, 100.0, 125.0, 91.0) == (ExitCode.TAKE_PROFIT, 120.0)


@pytest.mark.parametrize(
    ("exit_rule", "open_", "expected_code"),
    [
        ("stop-first", 85.0, ExitCode.STOP_LOSS),
        ("target-first", 105.0, ExitCode.TAKE_PROFIT),
        ("open-nearest", 105.0, ExitCode.STOP_LOSS),  # short from 100: 5 to the stop (110), 25 to the target
        ("open-nearest", 85.0, ExitCode.TAKE_PROFIT),  # 25 to the stop, 5 to the target (80)
    ],
)
def test_a_short_position_mirrors_the_exit_rules(exit_rule: str, open_: float, expected_code: int) -> None:
    both = rules(stop_loss_pct=10, take_profit_pct=20, exit_rule=exit_rule)
    code, price = stop_exit(both, -10.0, 100.0, 100.0, open_, 115.0, 75.0)
    assert code == expected_code
    assert price == pytest.approx(110.0 if code == ExitCode.STOP_LOSS else 80.0)


def test_a_trailing_stop_meets_the_exit_rules_too() -> None:
    # Best 110 since entry at 100: the trail (99) is the stop; the target is 120.
    trailing = {"trailing_stop_pct": 10, "take_profit_pct": 20}
    bar = (10.0, 100.0, 110.0, 118.0, 121.0, 98.0)
    assert stop_exit(rules(**trailing), *bar)[0] == ExitCode.TRAILING_STOP
    assert stop_exit(rules(**trailing, exit_rule="open-nearest"), *bar) == (ExitCode.TAKE_PROFIT, 120.0)


def test_the_tighter_of_stop_loss_and_trailing_stop_is_the_stop() -> None:
    both = rules(stop_loss_pct=10, trailing_stop_pct=5)
    # Best price 110 since entry at 100: the trail (104.5) is above the stop-loss (90).
    assert stop_exit(both, 10.0, 100.0, 110.0, 105.0, 106.0, 104.0) == (ExitCode.TRAILING_STOP, 104.5)
    # Best price 100: the trail (95) is above the stop-loss still.
    assert stop_exit(both, 10.0, 100.0, 100.0, 96.0, 96.0, 94.0) == (ExitCode.TRAILING_STOP, 95.0)
    assert stop_exit(rules(stop_loss_pct=3, trailing_stop_pct=5), 10.0, 100.0, 100.0, 98, 98, 96.5)[0] == (
        ExitCode.STOP_LOSS
    )


def test_the_best_price_follows_the_position_side() -> None:
    assert trail(10.0, 100.0, 104.0, 97.0) == 104.0
    assert trail(-10.0, 100.0, 104.0, 97.0) == 97.0
    assert trail(10.0, 100.0, 99.0, 97.0) == 100.0
    assert trail(0.0, 0.0, 104.0, 97.0) == 0.0


def test_only_stop_outs_start_a_cooldown() -> None:
    cooled = rules(risk={"cooldown_bars": 3})
    assert cooldown_until(cooled, ExitCode.STOP_LOSS, 10, -1) == 13
    assert cooldown_until(cooled, ExitCode.TRAILING_STOP, 10, -1) == 13
    assert cooldown_until(cooled, ExitCode.TAKE_PROFIT, 10, -1) == -1
    assert cooldown_until(cooled, NO_EXIT, 10, 4) == 4
    assert cooldown_until(rules(), ExitCode.STOP_LOSS, 10, -1) == -1


def test_entry_blocks() -> None:
    limited = rules(risk={"max_daily_loss_pct": 2})
    assert entry_block(limited, 5, 5, 10_000.0, 10_000.0) == EntryBlock.COOLDOWN
    assert entry_block(limited, 6, 5, 9_799.0, 10_000.0) == EntryBlock.DAILY_LOSS
    assert entry_block(limited, 6, 5, 9_800.0, 10_000.0) == EntryBlock.NONE
    assert entry_block(rules(), 6, 5, 1.0, 10_000.0) == EntryBlock.NONE  # no daily-loss limit
