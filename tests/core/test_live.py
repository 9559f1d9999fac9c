"""The live strategy: orders in flight, assumed filled when sent, settled by the broker's answers;
and its snapshot, which services keep in Kafka across releases.

The broker here is the executor's real `PaperBroker`; orders reach it and its answers come back
late, in batches, as they do through Kafka, while prices keep arriving.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.services.test_broker import order
from tradebot.adapters.topics import FillRecord
from tradebot.core import live as live_module
from tradebot.core.costs import Costs
from tradebot.core.live import LiveStrategy
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
from tradebot.executor.broker import PaperBroker

T0 = datetime(2024, 1, 1, tzinfo=UTC)
COSTS = Costs(commission_pct=0.1, slippage_bps=5.0)


def make(**params: object) -> LiveStrategy:
    base: dict[str, object] = {"short_window": 2, "long_window": 4}
    base.update(params)
    return LiveStrategy("s1", StrategyParams.model_validate(base), COSTS, 10_000.0)


def sent(strategy: LiveStrategy, *orders: OrderRequest) -> tuple[OrderRequest, ...]:
    """Orders the strategy sent and assumed filled, unanswered yet."""
    for request in orders:
        strategy.assume_filled(request)
    return orders


def entry_and_exit(
    strategy: LiveStrategy, exit_reason: OrderReason = OrderReason.EXIT_CROSS
) -> tuple[OrderRequest, ...]:
    return sent(
        strategy,
        order(Side.BUY, 10.0, 100.0, OrderReason.ENTRY_LONG, 1),
        order(Side.SELL, 10.0, 101.0, exit_reason, 2),
    )


def test_an_exit_behind_a_refused_entry_is_undone_with_it() -> None:
    strategy = make()
    entry, exit_ = entry_and_exit(strategy, OrderReason.STOP_LOSS)
    assert strategy.book.position("AAA") == 0.0

    strategy.on_broker_answer(entry, filled=False)
    # Not short 10 while the exit's refusal is on its way: the broker is flat, and will refuse it.
    assert strategy.book.position("AAA") == 0.0
    assert math.isclose(strategy.book.cash, 10_000.0)
    assert [(f.order_id, f.doomed) for f in strategy.orders_in_flight("AAA")] == [(exit_.id, True)]

    strategy.on_broker_answer(exit_, filled=False)
    assert strategy.book.position("AAA") == 0.0
    assert math.isclose(strategy.book.cash, 10_000.0)
    assert strategy.orders_in_flight("AAA") == []
    assert strategy.counters.rejected_fills == 2


def test_a_refused_exit_restores_the_position_with_its_entry_and_best_price() -> None:
    strategy = make(stop_loss_pct=5.0)
    (entry,) = sent(strategy, order(Side.BUY, 10.0, 100.0, OrderReason.ENTRY_LONG, 1))
    strategy.on_broker_answer(entry, filled=True)
    held = strategy.book.holding("AAA")
    entry_price = held.entry_price
    held.best_price = 104.0
    (exit_,) = sent(strategy, order(Side.SELL, 10.0, 103.0, OrderReason.EXIT_CROSS, 2))
    strategy.on_broker_answer(exit_, filled=False)
    assert (held.qty, held.entry_price, held.best_price) == (10.0, entry_price, 104.0)


def test_a_predicted_refusal_that_fills_after_all_is_applied() -> None:
    strategy = make()
    entry, exit_ = entry_and_exit(strategy)
    strategy.on_broker_answer(entry, filled=False)
    # A broker that held a position this instance did not know of fills the exit anyway.
    strategy.on_broker_answer(exit_, filled=True)
    sold, fee = COSTS.execute(-1, 10.0, 101.0)
    assert strategy.book.position("AAA") == -10.0
    assert math.isclose(strategy.book.cash, 10_000.0 + 10.0 * sold - fee)


def test_orders_in_flight_survive_a_snapshot() -> None:
    strategy = make()
    entry, _ = entry_and_exit(strategy)
    restored = LiveStrategy.restore(json.loads(json.dumps(strategy.snapshot())))
    for instance in (strategy, restored):
        instance.on_broker_answer(entry, filled=False)
    assert json.dumps(restored.snapshot()) == json.dumps(strategy.snapshot())  # NaN-safe
    assert restored.orders_in_flight("AAA")[0].doomed


@dataclass
class Run:
    """A strategy trading against the real paper broker, with orders and answers delayed in queues."""

    strategy: LiveStrategy
    broker: PaperBroker = field(default_factory=lambda: PaperBroker(COSTS))
    sent: list[OrderRequest] = field(default_factory=list)
    handled: list[FillRecord] = field(default_factory=list)
    # After each answer read: (strategy's qty, answers read, orders then sent).
    views: list[tuple[float, int, int]] = field(default_factory=list)
    to_broker: deque[OrderRequest] = field(default_factory=deque)
    to_strategy: deque[FillRecord] = field(default_factory=deque)

    @classmethod
    def of(cls, case: dict[str, Any]) -> Run:
        return cls(make(allow_short=case["allow_short"], stop_loss_pct=case["stop_loss"], sizing="qty:10"))

    def broker_handles(self, count: int, halted: bool) -> None:
        for _ in range(min(count, len(self.to_broker))):
            result = self.broker.execute(self.to_broker.popleft(), now=T0, halted=halted, last_price=None)
            assert result is not None
            self.handled.append(result)
            self.to_strategy.append(result)

    def strategy_reads(self, count: int) -> None:
        for _ in range(min(count, len(self.to_strategy))):
            answer = self.to_strategy.popleft()
            flight = next(
                (f for f in self.strategy.orders_in_flight("AAA") if f.order_id == answer.order.id), None
            )
            # Foreseen unless orders went untracked (the limit test): their refusals come unannounced.
            if (
                answer.fill.reject_code is RejectCode.NO_POSITION
                and not self.strategy.counters.untracked_orders
            ):
                assert flight is not None
                assert flight.doomed, "an exit refused for want of a position was not foreseen"
            self.strategy.on_broker_answer(answer.order, filled=answer.fill.status is FillStatus.FILLED)
            self.views.append(
                (
                    self.strategy.book.position("AAA"),
                    len(self.handled) - len(self.to_strategy),
                    len(self.sent),
                )
            )

    def play(
        self, moves: list[float], halted: list[bool], broker_steps: list[int], answer_steps: list[int]
    ) -> None:
        price = 100.0
        for step, move in enumerate(moves):
            price *= 1.0 + move
            ts = T0 + timedelta(minutes=step)
            for request in self.strategy.on_price("AAA", price, ts, f"tick:{step}").orders:
                self.strategy.assume_filled(request)
                self.sent.append(request)
                self.to_broker.append(request)
            self.broker_handles(broker_steps[step], halted[step])
            self.strategy_reads(answer_steps[step])
        self.broker_handles(len(self.to_broker), halted[len(moves) - 1])
        self.strategy_reads(len(self.to_strategy))

    def filled(self) -> dict[str, FillRecord]:
        return {r.order.id: r for r in self.handled if r.fill.status is FillStatus.FILLED}

    def assert_books_agree(self) -> None:
        """Once everything is answered the strategy's book is the broker's, cash included."""
        assert self.strategy.orders_in_flight("AAA") == []
        book = self.broker.book("s1", "AAA")
        assert math.isclose(self.strategy.book.position("AAA"), book.qty, abs_tol=1e-9)
        cash = 10_000.0 - sum(
            r.fill.side.sign * r.fill.qty * r.fill.price + r.fill.commission for r in self.filled().values()
        )
        assert math.isclose(self.strategy.book.cash, cash, rel_tol=1e-12, abs_tol=1e-6)


DELAYS: dict[str, st.SearchStrategy[Any]] = {
    "moves": st.lists(st.floats(-0.04, 0.04), min_size=20, max_size=160),
    "halted": st.lists(st.booleans(), min_size=160, max_size=160),
    "broker_steps": st.lists(st.integers(0, 3), min_size=160, max_size=160),
    "answer_steps": st.lists(st.integers(0, 3), min_size=160, max_size=160),
    "allow_short": st.booleans(),
    "stop_loss": st.sampled_from([None, 1.0, 3.0]),
}


@settings(max_examples=150, deadline=None)
@given(case=st.fixed_dictionaries(DELAYS))
def test_the_strategy_books_what_the_broker_will_do_whatever_the_delays(case: dict[str, Any]) -> None:
    """While answers are late, the strategy's position is the broker's as of the last answer read
    plus the orders in flight the broker's position rule lets through; an exit refused for want of a
    position is always foreseen; once all are answered the two books agree, cash included."""
    run = Run.of(case)
    run.play(case["moves"], case["halted"], case["broker_steps"], case["answer_steps"])
    assert run.strategy.counters.untracked_orders == 0
    filled = run.filled()
    for qty, read, sent_then in run.views:
        expected = sum(r.fill.side.sign * r.fill.qty for r in run.handled[:read] if r.order.id in filled)
        for request in run.sent[read:sent_then]:
            if position_refusal(request.reason, request.side, request.qty, expected) is None:
                expected += request.side.sign * request.qty
        assert math.isclose(qty, expected, abs_tol=1e-9)
    refused = [r.order.reason for r in run.handled if r.fill.status is FillStatus.REJECTED]
    refused_entries = sum(reason in ENTRY_REASONS for reason in refused)
    assert len(refused) - refused_entries <= refused_entries
    run.assert_books_agree()


@settings(max_examples=100, deadline=None)
@given(case=st.fixed_dictionaries(DELAYS))
def test_past_the_tracking_limit_the_books_still_agree_in_the_end(case: dict[str, Any]) -> None:
    """An executor that stops answering must not grow the snapshot without bound: past the limit
    the oldest orders are no longer tracked, and their answers still leave the books equal."""
    with patch.object(live_module, "MAX_TRACKED_IN_FLIGHT", 1):
        run = Run.of(case)
        run.play(case["moves"], case["halted"], case["broker_steps"], [0] * 160)  # nothing read until the end
    if len(run.sent) > 1:
        assert run.strategy.counters.untracked_orders == len(run.sent) - 1
    run.assert_books_agree()


def test_the_snapshot_stays_small_when_no_answer_comes() -> None:
    strategy = make()
    for n in range(0, 2 * live_module.MAX_TRACKED_IN_FLIGHT, 2):
        sent(
            strategy,
            order(Side.BUY, 1.0, 100.0, OrderReason.ENTRY_LONG, n),
            order(Side.SELL, 1.0, 100.0, OrderReason.EXIT_CROSS, n + 1),
        )
    assert len(strategy.orders_in_flight("AAA")) == live_module.MAX_TRACKED_IN_FLIGHT
    assert strategy.counters.untracked_orders == live_module.MAX_TRACKED_IN_FLIGHT


# Written by the strategy before it was split into parts (commit 7e17393) from `golden_run()`.
GOLDEN_SNAPSHOT = Path(__file__).with_name("live_snapshot_v1.json")


def golden_run() -> LiveStrategy:
    """Two symbols with every stop and limit, answers late, the last dozen never answered, and the
    oldest unanswered entry refused (which dooms the exit sent behind it)."""
    params = {
        "short_window": 2,
        "long_window": 5,
        "stop_loss_pct": 1.5,
        "trailing_stop_pct": 2.5,
        "take_profit_pct": 12,
        "allow_short": True,
        "sizing": "equity-pct:30",
        "qty_step": 0.5,
        "risk": {"cooldown_bars": 2, "max_daily_loss_pct": 2},
    }
    strategy = LiveStrategy(
        "golden",
        StrategyParams.model_validate(params),
        Costs(commission_pct=0.1, commission_fixed=1.0, slippage_bps=5.0),
        25_000.0,
    )
    pending: list[OrderRequest] = []
    start = datetime(2024, 3, 1, tzinfo=UTC)
    for i in range(120):
        for symbol, base, speed in (("AAA", 100.0, 0.31), ("BBB", 40.0, 0.17)):
            price = round(base * (1.0 + 0.08 * math.sin(i * speed) + 0.01 * math.sin(i * 1.7)), 4)
            step = strategy.on_price(symbol, price, start + i * timedelta(hours=5), f"tick:{symbol}:{i}")
            for request in step.orders:
                strategy.assume_filled(request)
                pending.append(request)
        if i % 3 == 2 and i < 80 and pending:
            strategy.on_broker_answer(pending.pop(0), filled=True)
    entry = next(o for o in pending if o.reason in ENTRY_REASONS)
    strategy.on_broker_answer(entry, filled=False)
    return strategy


def test_snapshots_keep_the_format_services_already_wrote() -> None:
    """A snapshot written before the strategy was split restores exactly, and the same trading
    writes it again key for key and value for value (parameters as the model has them now)."""
    text = GOLDEN_SNAPSHOT.read_text()
    golden = json.loads(text)
    golden["params"] = StrategyParams.model_validate(golden["params"]).model_dump(mode="json")
    expected = json.dumps(golden, indent=1)
    assert json.dumps(LiveStrategy.restore(json.loads(text)).snapshot(), indent=1) == expected
    played = golden_run()
    written = played.snapshot()
    # Beside the format of old, each symbol names the order that opened its position (force-exits are
    # keyed by it); the rest is as it was.
    assert {name: state.pop("entry_id") for name, state in written["symbols"].items()} == played.entry_ids
    assert set(played.entry_ids) == {"AAA", "BBB"}
    assert json.dumps(written, indent=1) == expected
    # Every part is covered: a stop-out's cooldown, and an exit doomed by its refused entry.
    assert played.symbols["AAA"].cooldown_until > 0
    assert any(f.doomed for f in played.orders_in_flight("BBB"))


def test_a_force_exit_command_runs_once_and_its_order_id_names_the_position_it_closes() -> None:
    """The same command closing a later position (a snapshot without handled ids) must not reuse the first
    exit's order id: the executor drops a repeated id while the strategy assumes the exit filled."""
    strategy = make()
    first_entry = order(Side.BUY, 10, 100.0, OrderReason.ENTRY_LONG, 1)
    strategy.assume_filled(first_entry)
    tick_at = T0 + timedelta(minutes=3)
    strategy.on_tick("AAA", 101.0, 1.0, tick_at, "tick:AAA:3", strategy.assume_filled)
    strategy.note_tick("AAA", tick_at)  # as the service does for every tick it trades on
    exit_1 = strategy.force_exit_once("cmd-1", "AAA", T0 + timedelta(days=900))
    assert exit_1 is not None
    assert exit_1.reason is OrderReason.FORCE_EXIT
    # At the last tick's price and time (the event time of the price it exits at), not the request's.
    assert (exit_1.ref_price, exit_1.ts) == (101.0, tick_at)
    assert exit_1.cause == f"force-exit:cmd-1:{first_entry.id}"
    # The same command and position (a batch replayed after a crash): the same order, which the executor
    # fills once.
    assert strategy.force_exit_once("cmd-1", "AAA", T0) == exit_1
    strategy.assume_filled(exit_1)
    strategy.remember_command("cmd-1")
    assert strategy.force_exit_once("cmd-1", "AAA", T0) is None  # handled

    second_entry = order(Side.BUY, 10, 102.0, OrderReason.ENTRY_LONG, 2)
    strategy.assume_filled(second_entry)
    assert strategy.force_exit_once("cmd-1", "AAA", T0) is None  # a retry after re-entry: still handled
    restored = LiveStrategy.restore(json.loads(json.dumps(strategy.snapshot())))
    assert restored.handled_commands == ["cmd-1"]
    assert restored.entry_ids == {"AAA": second_entry.id}
    assert restored.tick_times == {"AAA": tick_at}
    assert restored.force_exit_once("cmd-1", "AAA", T0) is None
    restored.handled_commands.clear()  # as a snapshot written before handled ids were kept
    again = restored.force_exit_once("cmd-1", "AAA", T0)
    assert again is not None
    assert again.id != exit_1.id


def test_handled_commands_are_bounded() -> None:
    strategy = make()
    for n in range(live_module.MAX_HANDLED_COMMANDS + 5):
        strategy.remember_command(f"c-{n}")
    strategy.remember_command("c-10")  # known: not added again
    assert len(strategy.handled_commands) == live_module.MAX_HANDLED_COMMANDS
    assert strategy.handled_commands[0] == "c-5"
    assert strategy.handled_commands[-1] == f"c-{live_module.MAX_HANDLED_COMMANDS + 4}"


def test_an_order_in_flight_snapshots_every_field_and_restores_equal() -> None:
    """The snapshot is written out field by field (cheaper than `dataclasses.asdict` every batch): it must
    hold every field, with the values asdict gives, and restore to an equal order."""
    from dataclasses import asdict, fields

    from tradebot.core.live import InFlight
    from tradebot.core.models import OrderReason, Side

    flight = InFlight(
        order_id="o-1",
        reason=OrderReason.STOP_LOSS,
        side=Side.SELL,
        qty=2.5,
        ref_price=101.25,
        entry_price=99.0,
        best_price=103.5,
        doomed=True,
    )
    snapshot = flight.snapshot()
    assert set(snapshot) == {f.name for f in fields(InFlight)}
    assert snapshot == asdict(flight)
    assert InFlight.restore(json.loads(json.dumps(snapshot))) == flight
