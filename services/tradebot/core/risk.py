"""Risk: the stops that close a position, and the limits that block an entry.

Rule functions (see `tradebot.core.rules`): the backtest kernel compiles these very functions, so
they take and return numbers only. Stops watch a price range: a tick or a bar's close is a range of
one price (open = high = low); a bar seen before its close (next-open fills) is its open, high and
low, and a stop then fills at its level, or at the open when the bar gapped through it.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import IntEnum

from tradebot.core.rules import NO_EXIT, ExitCode, ExitRuleCode, Rules


class EntryBlock(IntEnum):
    """Which risk limit keeps the strategy out of an entry its signal asked for."""

    NONE = 0
    COOLDOWN = 1
    DAILY_LOSS = 2


def stop_exit(
    rules: Rules, qty: float, entry_price: float, best_price: float, open_: float, high: float, low: float
) -> tuple[int, float]:
    """The stop that closes a position of `qty` over a price range, and at what price:
    (`ExitCode`, price), or (`NO_EXIT`, NaN). `best_price` is the best price since entry (the
    trailing stop's reference). The tighter of the stop-loss and the trailing stop is the stop; a
    range that reaches both the stop and the take-profit exits by `rules.exit_rule`: at the stop
    (stop-first), at the target (target-first), or at the level nearer the open (open-nearest)."""
    long = qty > 0.0
    stop = math.nan
    stop_code = ExitCode.STOP_LOSS
    if not math.isnan(rules.stop_loss_pct):
        stop = (
            entry_price * (1.0 - rules.stop_loss_pct / 100.0)
            if long
            else entry_price * (1.0 + rules.stop_loss_pct / 100.0)
        )
    if not math.isnan(rules.trailing_stop_pct):
        trail = (
            best_price * (1.0 - rules.trailing_stop_pct / 100.0)
            if long
            else best_price * (1.0 + rules.trailing_stop_pct / 100.0)
        )
        if math.isnan(stop) or (trail > stop if long else trail < stop):
            stop = trail
            stop_code = ExitCode.TRAILING_STOP
    target = math.nan
    if not math.isnan(rules.take_profit_pct):
        target = (
            entry_price * (1.0 + rules.take_profit_pct / 100.0)
            if long
            else entry_price * (1.0 - rules.take_profit_pct / 100.0)
        )
    # A gap through a level at the open fills there (the open is on one side of both levels only).
    if open_ <= stop if long else open_ >= stop:
        return stop_code, open_
    if open_ >= target if long else open_ <= target:
        return ExitCode.TAKE_PROFIT, open_
    stop_hit = low <= stop if long else high >= stop
    target_hit = high >= target if long else low <= target
    if stop_hit and target_hit:
        # The bar reached both: its path is unknown, so the named exit rule decides.
        if rules.exit_rule == ExitRuleCode.TARGET_FIRST:
            stop_hit = False
        elif rules.exit_rule == ExitRuleCode.OPEN_NEAREST:
            # Equally near: the stop (the conservative answer).
            stop_hit = abs(open_ - stop) <= abs(target - open_)
    if stop_hit:
        return stop_code, stop
    if target_hit:
        return ExitCode.TAKE_PROFIT, target
    return NO_EXIT, math.nan


def trail(qty: float, best_price: float, high: float, low: float) -> float:
    """The best price since entry once a price range is seen: the highest when long, the lowest when short."""
    if qty > 0.0 and high > best_price:
        return high
    if qty < 0.0 and low < best_price:
        return low
    return best_price


def cooldown_until(rules: Rules, code: int, bar_index: int, current: int) -> int:
    """The last bar without entries once an exit `code` happened at `bar_index`: a stop-out (not a
    take-profit) starts a cooldown of `cooldown_bars`; anything else leaves `current`."""
    if (code == ExitCode.STOP_LOSS or code == ExitCode.TRAILING_STOP) and rules.cooldown_bars > 0:
        return bar_index + rules.cooldown_bars
    return current


def tracks_daily_loss(rules: Rules) -> bool:
    """Whether the day's starting equity is needed (for the daily-loss limit)."""
    return not math.isnan(rules.max_daily_loss_pct)


def entry_block(
    rules: Rules, bar_index: int, cooldown_end: int, equity: float, day_start_equity: float
) -> int:
    """The limit that blocks an entry at `bar_index` with `equity` (once any exit decided with it
    is done), or `EntryBlock.NONE`."""
    if bar_index <= cooldown_end:
        return EntryBlock.COOLDOWN
    if equity < day_start_equity * (1.0 - rules.max_daily_loss_pct / 100.0):
        return EntryBlock.DAILY_LOSS
    return EntryBlock.NONE


def day_of(ts: datetime) -> int:
    """The UTC day number (days since the epoch) of an aware timestamp; the daily-loss limit's day.
    (The kernel takes the day of each bar precomputed from the bar index.)"""
    return math.floor(ts.timestamp() / 86_400.0)
