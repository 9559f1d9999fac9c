"""The crossover state machine: crosses, stops, sizing, risk limits, snapshots, no look-ahead."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.core.costs import Costs, commission, fill_price
from tradebot.core.models import OrderReason, OrderRequest, Side
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import CrossoverStrategy

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def feed(
    strategy: CrossoverStrategy,
    prices: list[float],
    symbol: str = "AAA",
    start: int = 0,
    step: timedelta = timedelta(minutes=1),
) -> list[OrderRequest]:
    """Feeds prices as ticks and fills every order at once at its reference price (as live does)."""
    emitted: list[OrderRequest] = []
    for i, price in enumerate(prices, start=start):
        result = strategy.on_price(symbol, price, T0 + i * step, f"tick:{symbol}:{i}")
        for order in result.orders:
            executed = fill_price(order.side.sign, order.ref_price, strategy.costs.slippage_bps)
            fee = commission(
                order.qty, executed, strategy.costs.commission_pct, strategy.costs.commission_fixed
            )
            strategy.on_fill(order.side, order.qty, executed, fee, symbol)
        emitted.extend(result.orders)
    return emitted


def make(**params: object) -> CrossoverStrategy:
    base: dict[str, object] = {"short_window": 2, "long_window": 4}
    base.update(params)
    return CrossoverStrategy("s1", StrategyParams.model_validate(base), Costs(), 10_000.0)


DOWN_UP_DOWN = [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0, 12.0, 13.0, 11.0, 8.0, 6.0, 5.0]


def test_enters_on_upward_cross_and_exits_on_downward_cross() -> None:
    strategy = make()
    orders = feed(strategy, DOWN_UP_DOWN)
    assert [(o.side, o.reason) for o in orders] == [
        (Side.BUY, OrderReason.ENTRY_LONG),
        (Side.SELL, OrderReason.EXIT_CROSS),
    ]
    entry, exit_ = orders
    # SMA2 crosses SMA4 at index 6 (8,11 -> 9.5 vs 8.0 after 7.0/7.25 before); exits at index 10.
    assert entry.cause == "tick:AAA:6"
    assert exit_.cause == "tick:AAA:10"
    assert entry.qty == 10_000.0 // 11.0  # all-in, whole units
    assert strategy.book.position("AAA") == 0.0


def test_shorts_reverse_when_allowed() -> None:
    strategy = make(allow_short=True)
    orders = feed(strategy, [*DOWN_UP_DOWN, 4.0, 6.0, 9.0, 12.0])
    reasons = [o.reason for o in orders]
    assert reasons == [
        OrderReason.ENTRY_LONG,
        OrderReason.EXIT_CROSS,
        OrderReason.ENTRY_SHORT,
        OrderReason.EXIT_CROSS,
        OrderReason.ENTRY_LONG,
    ]
    # An exit and the reversing entry come from the same event, with distinct deterministic ids.
    assert orders[1].cause == orders[2].cause
    assert orders[1].id != orders[2].id


def test_stop_loss_exits_at_the_price_that_breached_it() -> None:
    strategy = make(stop_loss_pct=5)
    orders = feed(strategy, [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0, 10.5, 10.4, 10.0])
    assert [o.reason for o in orders] == [OrderReason.ENTRY_LONG, OrderReason.STOP_LOSS]
    assert orders[1].ref_price == 10.4  # 10.5 is within 5% of 11; 10.4 is not (10.45)


def test_trailing_stop_follows_the_best_price() -> None:
    strategy = make(trailing_stop_pct=10)
    orders = feed(strategy, [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0, 15.0, 20.0, 18.5, 17.9])
    assert [o.reason for o in orders] == [OrderReason.ENTRY_LONG, OrderReason.TRAILING_STOP]
    assert orders[1].ref_price == 17.9  # 10% below the best (20) is 18.0


def test_take_profit() -> None:
    strategy = make(take_profit_pct=20)
    orders = feed(strategy, [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0, 12.0, 13.3])
    assert [o.reason for o in orders] == [OrderReason.ENTRY_LONG, OrderReason.TAKE_PROFIT]


def test_intrabar_stop_fills_at_the_stop_or_at_a_gap_open() -> None:
    strategy = make(stop_loss_pct=10)
    feed(strategy, [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0])  # long at 11
    inside = strategy.on_intrabar("AAA", 10.5, 10.8, 9.5, T0 + timedelta(days=1), "bar:x")
    assert [o.reason for o in inside] == [OrderReason.STOP_LOSS]
    assert inside[0].ref_price == pytest.approx(9.9)

    gapped = make(stop_loss_pct=10)
    feed(gapped, [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0])
    through = gapped.on_intrabar("AAA", 9.0, 9.2, 8.5, T0 + timedelta(days=1), "bar:y")
    assert [(o.reason, o.ref_price) for o in through] == [(OrderReason.STOP_LOSS, 9.0)]


def test_cooldown_blocks_entries_after_a_stop_out() -> None:
    prices = [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0, 10.0, 7.0, 6.0, 9.0, 12.0, 14.0]
    free = feed(make(stop_loss_pct=5), prices)
    cooled = make(stop_loss_pct=5, risk={"cooldown_bars": 10})
    blocked = feed(cooled, prices)
    assert [o.reason for o in free].count(OrderReason.ENTRY_LONG) == 2
    assert [o.reason for o in blocked] == [OrderReason.ENTRY_LONG, OrderReason.STOP_LOSS]


def test_daily_loss_limit_halts_entries_for_the_day() -> None:
    prices = [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0, 10.0, 7.0, 6.0, 9.0, 12.0, 14.0]
    limited = make(stop_loss_pct=5, risk={"max_daily_loss_pct": 1})
    orders = feed(limited, prices)
    assert [o.reason for o in orders] == [OrderReason.ENTRY_LONG, OrderReason.STOP_LOSS]
    # The next UTC day starts afresh.
    next_day = make(stop_loss_pct=5, risk={"max_daily_loss_pct": 1})
    orders = feed(next_day, prices, step=timedelta(hours=3))
    assert [o.reason for o in orders].count(OrderReason.ENTRY_LONG) == 2


@pytest.mark.parametrize(
    ("sizing", "risk", "expected"),
    [
        ("qty:7", {}, 7.0),
        ("notional:1000", {}, 90.0),  # 1000 / 11 = 90.9 -> whole units
        ("equity-pct:50", {}, 454.0),
        ("risk-pct:1", {}, 181.0),  # risk 100 over a 5% stop at 11 (0.55 a unit)
        ("all-in", {"max_position_qty": 12}, 12.0),
        ("all-in", {"max_position_notional": 110}, 10.0),
        ("all-in", {"max_gross_exposure": 0.5}, 454.0),
    ],
)
def test_sizing_and_caps(sizing: str, risk: dict[str, float], expected: float) -> None:
    strategy = make(sizing=sizing, risk=risk, stop_loss_pct=5)
    orders = feed(strategy, [10.0, 9.0, 8.0, 7.0, 6.0, 8.0, 11.0])
    assert orders[-1].reason is OrderReason.ENTRY_LONG
    assert orders[-1].qty == expected


prices_strategy = st.lists(
    st.floats(min_value=1.0, max_value=1000.0, allow_nan=False), min_size=5, max_size=120
)
params_strategy = st.fixed_dictionaries(
    {
        "ma_type": st.sampled_from(["sma", "ema"]),
        "short_window": st.integers(1, 5),
        "long_window": st.integers(6, 12),
        "stop_loss_pct": st.none() | st.floats(0.5, 20),
        "take_profit_pct": st.none() | st.floats(0.5, 50),
        "trailing_stop_pct": st.none() | st.floats(0.5, 20),
        "allow_short": st.booleans(),
        "risk": st.fixed_dictionaries({"cooldown_bars": st.integers(0, 3)}),
    }
)


@settings(max_examples=150, deadline=None)
@given(prices=prices_strategy, params=params_strategy, cut=st.integers(0, 120))
def test_snapshot_restore_continues_exactly(prices: list[float], params: dict[str, object], cut: int) -> None:
    """Stopping anywhere, serialising the state to JSON and restoring it changes nothing."""
    cut = min(cut, len(prices))
    whole = CrossoverStrategy("s1", StrategyParams.model_validate(params), Costs(commission_pct=0.1))
    expected = feed(whole, prices)

    first = CrossoverStrategy("s1", StrategyParams.model_validate(params), Costs(commission_pct=0.1))
    before = feed(first, prices[:cut])
    restored = CrossoverStrategy.restore(json.loads(json.dumps(first.snapshot())))
    after = feed(restored, prices[cut:], start=cut)
    assert before + after == expected
    assert json.dumps(restored.snapshot(), sort_keys=True) == json.dumps(whole.snapshot(), sort_keys=True)


@settings(max_examples=100, deadline=None)
@given(prices=prices_strategy, params=params_strategy, future=prices_strategy)
def test_no_look_ahead(prices: list[float], params: dict[str, object], future: list[float]) -> None:
    """Orders up to any point do not depend on prices after it."""
    alone = feed(CrossoverStrategy("s1", StrategyParams.model_validate(params)), prices)
    with_future = feed(CrossoverStrategy("s1", StrategyParams.model_validate(params)), prices + future)
    assert with_future[: len(alone)] == alone
    assert all(int(o.cause.rsplit(":", 1)[1]) >= len(prices) for o in with_future[len(alone) :])
