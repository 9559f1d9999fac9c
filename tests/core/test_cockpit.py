"""The live page's numbers (issue 16.1 to 16.3), against a small record worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tradebot.core.cockpit import (
    Execution,
    combined,
    marked_equity,
    profit_by,
    stop_levels,
    summary,
    trades,
    with_drawdown,
)
from tradebot.core.models import OrderReason
from tradebot.core.params import StrategyParams


def approx(value: float) -> Any:
    """`pytest.approx`, typed so that it may stand in a tuple compared with floats."""
    return pytest.approx(value)


def at(day: int, hour: int) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


BUY, SELL = 1, -1
# AAA: 10 bought at 100 and sold at 110 (a fee of 1 each way); BBB: 5 bought at 200, sold at 180; AAA
# bought again at 105 and held.
EXECUTIONS = [
    Execution("AAA", BUY, 10, 100.0, 1.0, at(2, 10), OrderReason.ENTRY_LONG),
    Execution("AAA", SELL, 10, 110.0, 1.0, at(2, 12), OrderReason.EXIT_CROSS),
    Execution("BBB", BUY, 5, 200.0, 0.0, at(3, 9), OrderReason.ENTRY_LONG),
    Execution("BBB", SELL, 5, 180.0, 0.0, at(3, 10), OrderReason.FORCE_EXIT),
    Execution("AAA", BUY, 10, 105.0, 1.0, at(3, 11), OrderReason.ENTRY_LONG),
]
PRICES = {
    "AAA": [
        (at(2, 10), 100.0),
        (at(2, 11), 90.0),
        (at(2, 12), 110.0),
        (at(3, 11), 105.0),
        (at(3, 12), 100.0),
    ],
    "BBB": [(at(3, 9), 200.0), (at(3, 10), 180.0)],
}
MARKS = {"AAA": (100.0, at(3, 12)), "BBB": (180.0, at(3, 10))}


def test_trades_pair_entries_and_exits_with_profit_in_percent_and_duration() -> None:
    params = StrategyParams(stop_loss_pct=2.0, take_profit_pct=5.0, trailing_stop_pct=3.0)
    open_trades, closed = trades("s", EXECUTIONS, MARKS, params)
    assert [(t.symbol, t.pnl, t.pnl_pct, t.duration_s, t.exit_reason) for t in closed] == [
        ("AAA", approx(98.0), approx(9.8), 7200.0, OrderReason.EXIT_CROSS),
        ("BBB", approx(-100.0), approx(-10.0), 3600.0, OrderReason.FORCE_EXIT),
    ]
    assert len(open_trades) == 1  # BBB is flat: not an open trade
    held = open_trades[0]
    assert (held.symbol, held.side, held.qty, held.entry_price, held.entry_ts) == (
        "AAA",
        "long",
        10,
        105.0,
        at(3, 11),
    )
    assert held.unrealized_pnl == approx(-50.0)
    assert held.unrealized_pct == approx(-50.0 / 1050.0 * 100.0)
    assert held.duration_s == 3600.0
    assert (held.stop_loss, held.take_profit, held.trailing_stop) == (
        approx(102.9),
        approx(110.25),
        approx(101.85),
    )


def test_short_stop_levels_sit_above_the_entry() -> None:
    params = StrategyParams(stop_loss_pct=2.0, take_profit_pct=5.0, trailing_stop_pct=3.0, allow_short=True)
    assert stop_levels(params, False, 100.0, 90.0) == (
        approx(102.0),
        approx(95.0),
        approx(92.7),
    )
    assert stop_levels(None, True, 100.0, 100.0) == (None, None, None)


def test_profit_per_symbol_and_per_day() -> None:
    _, closed = trades("s", EXECUTIONS, MARKS)
    assert [(p.key, p.trades, p.pnl) for p in profit_by(closed, "symbol")] == [
        ("AAA", 1, approx(98.0)),
        ("BBB", 1, approx(-100.0)),
    ]
    assert [(p.key, p.pnl) for p in profit_by(closed, "day")] == [
        ("2024-01-03", approx(-100.0)),
        ("2024-01-02", approx(98.0)),
    ]


def test_equity_is_marked_at_every_price_including_open_positions() -> None:
    curve = marked_equity(10_000.0, EXECUTIONS, PRICES)
    assert [ts for ts, _ in curve] == sorted(ts for series in PRICES.values() for ts, _ in series)
    assert [value for _, value in curve] == pytest.approx([9999, 9899, 10098, 10098, 9998, 9997, 9947])
    drawdowns = [p.drawdown_pct for p in with_drawdown(curve)]
    assert drawdowns[1] == approx(100 / 9999 * 100)  # the open position's dip, between fills
    assert drawdowns[-1] == approx(151 / 10098 * 100)


def test_an_execution_after_the_last_price_adds_a_point() -> None:
    late = Execution("AAA", SELL, 10, 100.0, 0.0, at(4, 0), OrderReason.FORCE_EXIT)
    curve = marked_equity(10_000.0, [*EXECUTIONS, late], PRICES)
    assert curve[-1] == (at(4, 0), approx(9947.0))


def test_summary_from_hand_computed_numbers() -> None:
    _, closed = trades("s", EXECUTIONS, MARKS)
    curve = marked_equity(10_000.0, EXECUTIONS, PRICES)
    # Realised net of commissions: 100 - 100 - 3 fees; unrealised 10 x (100 - 105).
    got = summary("s", 10_000.0, -3.0, -50.0, 1000.0, curve, closed)
    assert got.equity == approx(9947.0)
    assert (got.pnl, got.pnl_pct) == (approx(-53.0), approx(-0.53))
    assert (got.realized_pnl, got.realized_pct) == (approx(-3.0), approx(-0.03))
    assert (got.unrealized_pnl, got.unrealized_pct) == (approx(-50.0), approx(-0.5))
    assert got.today_pnl == approx(9947.0 - 10098.0)  # since the last point of 2 January
    assert got.exposure == 1000.0
    assert got.max_drawdown_pct == approx(151 / 10098 * 100)
    assert (got.trades, got.win_rate_pct, got.profit_factor) == (2, 50.0, approx(0.98))


def test_summary_without_trades_or_losses() -> None:
    empty = summary("s", 1000.0, 0.0, 0.0, 0.0, [], [])
    assert (empty.equity, empty.today_pnl, empty.max_drawdown_pct) == (1000.0, 0.0, 0.0)
    assert (empty.win_rate_pct, empty.profit_factor) == (None, None)


def test_combined_curve_sums_each_strategy_at_its_latest_value() -> None:
    a = [(at(2, 1), 110.0), (at(2, 3), 120.0)]
    b = [(at(2, 2), 190.0), (at(2, 3), 180.0)]
    assert combined([(100.0, a), (200.0, b)]) == [(at(2, 1), 310.0), (at(2, 2), 300.0), (at(2, 3), 300.0)]
