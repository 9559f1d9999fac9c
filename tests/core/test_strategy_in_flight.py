"""The live strategy's orders in flight: assumed filled when sent, settled by the broker's answers.

The broker here is the executor's real `PaperBroker`; orders reach it and its answers come back
late, in batches, as they do through Kafka, while prices keep arriving.
"""

from __future__ import annotations

import json
import math
from collections import deque
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.services.test_broker import order
from tradebot.adapters.topics import FillRecord
from tradebot.core.costs import Costs
from tradebot.core.models import (
    ENTRY_REASONS,
    FillStatus,
    OrderReason,
    OrderRequest,
    RejectCode,
    Side,
    position_refusal,
)
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import CrossoverStrategy
from tradebot.executor.broker import PaperBroker

T0 = datetime(2024, 1, 1, tzinfo=UTC)
COSTS = Costs(commission_pct=0.1, slippage_bps=5.0)


def make(**params: object) -> CrossoverStrategy:
    base: dict[str, object] = {"short_window": 2, "long_window": 4}
    base.update(params)
    return CrossoverStrategy("s1", StrategyParams.model_validate(base), COSTS, 10_000.0)


def sent(strategy: CrossoverStrategy, *orders: OrderRequest) -> tuple[OrderRequest, ...]:
    """Orders the strategy sent and assumed filled, unanswered yet."""
    for request in orders:
        strategy.assume_filled(request)
    return orders


def entry_and_exit(
    strategy: CrossoverStrategy, exit_reason: OrderReason = OrderReason.EXIT_CROSS
) -> tuple[OrderRequest, ...]:
    return sent(
        strategy,
        order(Side.BUY, 10.0, 100.0, OrderReason.ENTRY_LONG, 1),
        order(Side.SELL, 10.0, 101.0, exit_reason, 2),
    )


def test_an_exit_behind_a_refused_entry_is_undone_with_it() -> None:
    strategy = make()
    entry, exit_ = entry_and_exit(strategy, OrderReason.STOP_LOSS)
    assert strategy.state("AAA").qty == 0.0

    strategy.on_broker_answer(entry, filled=False)
    # Not short 10 while the exit's refusal is on its way: the broker is flat, and will refuse it.
    state = strategy.state("AAA")
    assert state.qty == 0.0
    assert math.isclose(strategy.cash, 10_000.0)
    assert [(f.order_id, f.doomed) for f in state.in_flight] == [(exit_.id, True)]

    strategy.on_broker_answer(exit_, filled=False)
    assert state.qty == 0.0
    assert math.isclose(strategy.cash, 10_000.0)
    assert state.in_flight == []
    assert strategy.counters.rejected_fills == 2


def test_a_refused_exit_restores_the_position_with_its_entry_and_best_price() -> None:
    strategy = make(stop_loss_pct=5.0)
    (entry,) = sent(strategy, order(Side.BUY, 10.0, 100.0, OrderReason.ENTRY_LONG, 1))
    strategy.on_broker_answer(entry, filled=True)
    state = strategy.state("AAA")
    entry_price = state.entry_price
    state.best_price = 104.0
    (exit_,) = sent(strategy, order(Side.SELL, 10.0, 103.0, OrderReason.EXIT_CROSS, 2))
    strategy.on_broker_answer(exit_, filled=False)
    assert (state.qty, state.entry_price, state.best_price) == (10.0, entry_price, 104.0)


def test_a_predicted_refusal_that_fills_after_all_is_applied() -> None:
    strategy = make()
    entry, exit_ = entry_and_exit(strategy)
    strategy.on_broker_answer(entry, filled=False)
    # A broker that held a position this instance did not know of fills the exit anyway.
    strategy.on_broker_answer(exit_, filled=True)
    sold, fee = COSTS.execute(-1, 10.0, 101.0)
    assert strategy.state("AAA").qty == -10.0
    assert math.isclose(strategy.cash, 10_000.0 + 10.0 * sold - fee)


def test_orders_in_flight_survive_a_snapshot() -> None:
    strategy = make()
    entry, _ = entry_and_exit(strategy)
    restored = CrossoverStrategy.restore(json.loads(json.dumps(strategy.snapshot())))
    for instance in (strategy, restored):
        instance.on_broker_answer(entry, filled=False)
    assert json.dumps(restored.snapshot()) == json.dumps(strategy.snapshot())  # NaN-safe
    assert restored.state("AAA").in_flight[0].doomed


@settings(max_examples=150, deadline=None)
@given(
    moves=st.lists(st.floats(-0.04, 0.04), min_size=20, max_size=160),
    halted=st.lists(st.booleans(), min_size=160, max_size=160),
    broker_steps=st.lists(st.integers(0, 3), min_size=160, max_size=160),
    answer_steps=st.lists(st.integers(0, 3), min_size=160, max_size=160),
    allow_short=st.booleans(),
    stop_loss=st.sampled_from([None, 1.0, 3.0]),
)
def test_the_strategy_books_what_the_broker_will_do_whatever_the_delays(
    moves: list[float],
    halted: list[bool],
    broker_steps: list[int],
    answer_steps: list[int],
    allow_short: bool,
    stop_loss: float | None,
) -> None:
    """While answers are late, the strategy's position is the broker's as of the last answer read
    plus the orders in flight the broker's position rule lets through; an exit refused for want of a
    position is always foreseen; once all are answered the two books agree, cash included."""
    strategy = make(allow_short=allow_short, stop_loss_pct=stop_loss, sizing="qty:10")
    broker = PaperBroker(COSTS)
    to_broker: deque[OrderRequest] = deque()
    to_strategy: deque[FillRecord] = deque()
    sent: list[OrderRequest] = []
    # After each answer read: (strategy's qty, answers read, orders then sent).
    views: list[tuple[float, int, int]] = []
    handled: list[FillRecord] = []

    def broker_handles(count: int, step: int) -> None:
        for _ in range(min(count, len(to_broker))):
            request = to_broker.popleft()
            result = broker.execute(request, now=T0, halted=halted[step], last_price=None)
            assert result is not None
            handled.append(result)
            to_strategy.append(result)

    def strategy_reads(count: int) -> None:
        for _ in range(min(count, len(to_strategy))):
            answer = to_strategy.popleft()
            flight = next(f for f in strategy.state("AAA").in_flight if f.order_id == answer.order.id)
            if answer.fill.reject_code is RejectCode.NO_POSITION:
                assert flight.doomed, "an exit refused for want of a position was not foreseen"
            strategy.on_broker_answer(answer.order, filled=answer.fill.status is FillStatus.FILLED)
            views.append((strategy.state("AAA").qty, len(handled) - len(to_strategy), len(sent)))

    price = 100.0
    for step, move in enumerate(moves):
        price *= 1.0 + move
        for request in strategy.on_price("AAA", price, T0 + timedelta(minutes=step), f"tick:{step}").orders:
            strategy.assume_filled(request)
            sent.append(request)
            to_broker.append(request)
        broker_handles(broker_steps[step], step)
        strategy_reads(answer_steps[step])
    broker_handles(len(to_broker), len(moves) - 1)
    strategy_reads(len(to_strategy))

    filled = {r.order.id: r for r in handled if r.fill.status is FillStatus.FILLED}
    for qty, read, sent_then in views:
        expected = sum(r.fill.side.sign * r.fill.qty for r in handled[:read] if r.order.id in filled)
        for request in sent[read:sent_then]:
            if position_refusal(request.reason, request.side, request.qty, expected) is None:
                expected += request.side.sign * request.qty
        assert math.isclose(qty, expected, abs_tol=1e-9)
    refused = [r.order.reason for r in handled if r.fill.status is FillStatus.REJECTED]
    refused_entries = sum(reason in ENTRY_REASONS for reason in refused)
    assert len(refused) - refused_entries <= refused_entries
    assert strategy.state("AAA").in_flight == []
    book = broker.book("s1", "AAA")
    assert math.isclose(strategy.state("AAA").qty, book.qty, abs_tol=1e-9)
    cash = 10_000.0 - sum(
        r.fill.side.sign * r.fill.qty * r.fill.price + r.fill.commission for r in filled.values()
    )
    assert math.isclose(strategy.cash, cash, rel_tol=1e-12, abs_tol=1e-6)
