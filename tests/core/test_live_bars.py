"""The live strategy on a bar timeframe: bars built from the ticks it consumes, signals on their closes,
stops on every tick; its trades are the backtest's on the same ticks (`run_ticks`), a snapshot taken in
the middle of a bar continues exactly, and a late tick is counted, never merged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.backtest.engine import BacktestConfig, run_ticks
from tradebot.core.bars import aggregate, timeframe_ns
from tradebot.core.costs import Costs
from tradebot.core.live import LiveStrategy
from tradebot.core.models import OrderRequest
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import TickStep, from_epoch_ns

COSTS = Costs(commission_pct=0.1, slippage_bps=5.0)
SYMBOL = "ASSET"
T0_NS = 1_700_000_000 * 10**9  # 2023-11-14, a whole minute
PARAM_SETS: list[dict[str, Any]] = [
    {"short_window": 2, "long_window": 5, "stop_loss_pct": 1.0, "take_profit_pct": 2.0},
    {"ma_type": "ema", "short_window": 3, "long_window": 7, "trailing_stop_pct": 1.5, "allow_short": True},
    {"short_window": 2, "long_window": 4, "stop_loss_pct": 0.5, "risk": {"cooldown_bars": 2}},
]


@st.composite
def tick_streams(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random walk of ticks 0 to 50 s apart (several per minute, some minutes empty)."""
    n = draw(st.integers(20, 400))
    gaps = draw(st.lists(st.sampled_from([0, 1, 7, 20, 50, 130]), min_size=n, max_size=n))
    moves = draw(st.lists(st.integers(-8, 8), min_size=n, max_size=n))
    ts = T0_NS + np.cumsum(np.asarray(gaps, dtype=np.int64)) * 10**9
    price = 100.0 * np.cumprod(1.0 + np.asarray(moves, dtype=np.float64) / 1000.0)
    size = np.ones(n)
    return ts, price, size


def live_trades(
    strategy: LiveStrategy, ts: np.ndarray, price: np.ndarray, size: np.ndarray
) -> tuple[list[OrderRequest], list[TickStep]]:
    """Every tick through `on_tick`, each order assumed filled as the live service does."""
    orders: list[OrderRequest] = []
    steps: list[TickStep] = []

    def execute(order: OrderRequest) -> None:
        strategy.assume_filled(order)
        orders.append(order)

    for i in range(len(ts)):
        steps.append(
            strategy.on_tick(
                SYMBOL, float(price[i]), float(size[i]), from_epoch_ns(int(ts[i])), f"t{i}", execute
            )
        )
    return orders, steps


def round_trips(orders: list[OrderRequest]) -> list[tuple[str, float, float, float, str]]:
    """(side, qty, entry price, exit price, exit reason) per closed position."""
    trips = []
    for entry, exit_ in zip(orders[::2], orders[1::2], strict=False):
        trips.append((entry.side.value, entry.qty, entry.ref_price, exit_.ref_price, exit_.reason.value))
    return trips


@settings(max_examples=60, deadline=None)
@given(
    stream=tick_streams(), which=st.integers(0, len(PARAM_SETS) - 1), timeframe=st.sampled_from(["1m", "5m"])
)
def test_live_bars_trade_as_the_backtest_on_the_same_ticks(
    stream: tuple[np.ndarray, np.ndarray, np.ndarray], which: int, timeframe: str
) -> None:
    ts, price, size = stream
    params = StrategyParams.model_validate({**PARAM_SETS[which], "timeframe": timeframe})
    _, raw = run_ticks(ts, price, size, BacktestConfig(params, COSTS, 10_000.0, symbol=SYMBOL))
    orders, steps = live_trades(LiveStrategy("s", params, COSTS, 10_000.0), ts, price, size)
    expected = [
        (
            "buy" if side == "long" else "sell",
            qty,
            entry,
            exit_,
            reason,
        )
        for side, qty, entry, exit_, reason in raw.trades[
            ["side", "qty", "entry_price", "exit_price", "exit_reason"]
        ].itertuples(index=False)
        if reason != "end_of_data"
    ]
    # Prices in the trade table are the executed ones (slippage); the orders carry the reference.
    executed = [
        (
            side,
            qty,
            COSTS.execute(1 if side == "buy" else -1, qty, entry)[0],
            COSTS.execute(-1 if side == "buy" else 1, qty, exit_)[0],
            reason,
        )
        for side, qty, entry, exit_, reason in round_trips(orders)
    ]
    # The backtest also closes the last bar at the end of the data: one more close the live strategy
    # has not seen yet, which can add a trade at the end only.
    assert executed == expected[: len(executed)]
    assert len(expected) - len(executed) <= 1
    # The bars it closed are the aggregate's, but the last (still being built).
    bars = aggregate(ts, price, price, price, price, size, timeframe_ns(timeframe))
    closed = [s.bar for s in steps if s.bar is not None]
    assert [b.start_ns for b in closed] == bars.ts[:-1].tolist()
    assert [b.close for b in closed] == bars.close[:-1].tolist()
    assert [b.high for b in closed] == bars.high[:-1].tolist()


@settings(max_examples=40, deadline=None)
@given(stream=tick_streams(), cut=st.floats(0.05, 0.95), which=st.integers(0, len(PARAM_SETS) - 1))
def test_a_snapshot_in_the_middle_of_a_bar_continues_exactly(
    stream: tuple[np.ndarray, np.ndarray, np.ndarray], cut: float, which: int
) -> None:
    ts, price, size = stream
    params = StrategyParams.model_validate({**PARAM_SETS[which], "timeframe": "1m"})
    whole, _ = live_trades(LiveStrategy("s", params, COSTS, 10_000.0), ts, price, size)
    k = int(len(ts) * cut)
    first = LiveStrategy("s", params, COSTS, 10_000.0)
    before, _ = live_trades(first, ts[:k], price[:k], size[:k])
    # Through JSON, as the service stores it in Kafka.
    restored = LiveStrategy.restore(json.loads(json.dumps(first.snapshot())))
    orders: list[OrderRequest] = []

    def execute(order: OrderRequest) -> None:
        restored.assume_filled(order)
        orders.append(order)

    for i in range(k, len(ts)):
        restored.on_tick(SYMBOL, float(price[i]), float(size[i]), from_epoch_ns(int(ts[i])), f"t{i}", execute)
    assert [o.id for o in before + orders] == [o.id for o in whole]
    # As JSON: NaN (a day not started, an average not yet full) is not equal to itself.
    assert json.dumps(restored.snapshot(), sort_keys=True) == json.dumps(
        live_snapshot(ts, price, size, params), sort_keys=True
    )


def live_snapshot(
    ts: np.ndarray, price: np.ndarray, size: np.ndarray, params: StrategyParams
) -> dict[str, Any]:
    strategy = LiveStrategy("s", params, COSTS, 10_000.0)
    live_trades(strategy, ts, price, size)
    return strategy.snapshot()


def test_a_late_tick_is_counted_and_never_merged_into_a_closed_bar() -> None:
    strategy = LiveStrategy("s", StrategyParams(short_window=2, long_window=3, timeframe="1m"), COSTS)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    noop: list[OrderRequest] = []
    first = strategy.on_tick(SYMBOL, 100.0, 1.0, t0 + timedelta(seconds=10), "a", noop.append)
    closing = strategy.on_tick(SYMBOL, 101.0, 1.0, t0 + timedelta(seconds=70), "b", noop.append)
    late = strategy.on_tick(SYMBOL, 50.0, 1.0, t0 + timedelta(seconds=30), "c", noop.append)
    assert first.bar is None
    assert not first.late
    assert closing.bar is not None
    assert (closing.bar.open, closing.bar.close) == (100.0, 100.0)
    assert late.late
    assert (late.bar, late.orders) == (None, [])
    builder = strategy.symbols[SYMBOL].bars
    assert builder is not None
    assert builder.late == 1
    assert builder.current is not None
    assert builder.current.low == 101.0  # 50 not merged


def test_a_quiet_source_closes_its_bar_on_the_clock_after_the_lateness() -> None:
    strategy = LiveStrategy("s", StrategyParams(short_window=2, long_window=3, timeframe="1m"), COSTS)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    noop: list[OrderRequest] = []
    strategy.on_tick(SYMBOL, 100.0, 1.0, t0 + timedelta(seconds=10), "a", noop.append)
    lateness = 2 * 10**9
    assert strategy.close_due_bars(t0 + timedelta(seconds=61), lateness, noop.append) == []
    closed = strategy.close_due_bars(t0 + timedelta(seconds=62), lateness, noop.append)
    assert [(symbol, bar.start_ns, bar.close) for symbol, bar, _ in closed] == [
        (SYMBOL, int(t0.timestamp()) * 10**9, 100.0)
    ]
    # A tick of the closed minute arriving now is late; the next minute's opens a bar.
    assert strategy.on_tick(SYMBOL, 99.0, 1.0, t0 + timedelta(seconds=59), "b", noop.append).late
    assert not strategy.on_tick(SYMBOL, 99.0, 1.0, t0 + timedelta(seconds=63), "c", noop.append).late


def test_the_tick_timeframe_trades_on_tick_exactly_as_on_price() -> None:
    params = StrategyParams(short_window=2, long_window=4, stop_loss_pct=1.0)
    by_tick, by_price = LiveStrategy("s", params, COSTS), LiveStrategy("s", params, COSTS)
    rng = np.random.default_rng(3)
    prices = 100.0 * np.cumprod(1.0 + rng.normal(0, 0.01, 300))
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    got: list[OrderRequest] = []
    want: list[OrderRequest] = []

    def execute(order: OrderRequest) -> None:
        by_tick.assume_filled(order)
        got.append(order)

    for i, p in enumerate(prices.tolist()):
        ts = t0 + timedelta(seconds=i)
        by_tick.on_tick(SYMBOL, p, 0.0, ts, f"t{i}", execute)
        for order in by_price.on_price(SYMBOL, p, ts, f"t{i}").orders:
            by_price.assume_filled(order)
            want.append(order)
    assert got == want
    assert len(got) > 4
