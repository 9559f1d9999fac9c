"""The executor's risk metrics, from a running executor over the memory bus and store: P&L, equity,
exposure and drawdown marked at the feed's latest price, halts, and refusals counted by reason code."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from tests.adapters._wrapped_bus import WrappedBus
from tests.services.test_broker import order
from tradebot.adapters.bus import LOW_LATENCY_FETCH_WAIT_MS, PROJECTION_FETCH_WAIT_MS, Bus, Consumer
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.store import Query
from tradebot.adapters.topics import CONTROL, ORDERS, SIGNALS, HaltCommand, pipeline_topics
from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason, OrderRequest, Side, Signal
from tradebot.executor.broker import PaperBroker, RiskChecks
from tradebot.executor.runner import ExecutorMetrics, ExecutorRunner
from tradebot.kit.lifecycle import ShutdownEvent


async def until(what: str, check: Callable[[], bool], within_s: float = 10.0) -> None:
    """Waits up to `within_s` for `check` (the executor's watcher refreshes prices and halts every 0.25 s)."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s:g} s")
        await asyncio.sleep(0.05)


def memory_executor(
    store: MemoryStore | None = None,
) -> tuple[MemoryBus, MemoryStore, CollectorRegistry, ExecutorRunner]:
    """An executor over a memory bus (with the pipeline's topics) and store, its metrics on a registry of
    its own, and 10,000 for a strategy that registers no initial cash."""
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    store = store if store is not None else MemoryStore()
    registry = CollectorRegistry()
    runner = ExecutorRunner(
        bus=bus,
        store=store,
        broker=PaperBroker(Costs(), RiskChecks()),
        metrics=ExecutorMetrics(registry),
        initial_cash=10_000.0,
    )
    return bus, store, registry, runner


def send_halt(bus: Bus, strategy_id: str, halted: bool) -> None:
    """What the API's halt endpoint records: the executor's source of truth for halts."""
    command = HaltCommand(strategy_id=strategy_id, halted=halted)
    producer = bus.producer("test-control")
    producer.produce(CONTROL, command.model_dump_json().encode(), key=command.key())
    producer.flush()
    producer.close()


async def test_risk_gauges_follow_fills_prices_and_halts() -> None:
    bus, store, registry, runner = memory_executor()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"strategy": "s1", **labels})

    def send(made: OrderRequest) -> None:
        producer = bus.producer("test")
        producer.produce(ORDERS, made.model_dump_json().encode(), key=made.symbol.encode())
        producer.flush()

    await store.register_strategy("s1", {})
    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:
        await until("s1 known", lambda: value("tradebot_executor_strategy_halted") == 0.0)
        # Known series start at 0, every refusal reason included.
        assert value("tradebot_executor_orders_rejected_total", reason="max_notional") == 0.0
        assert value("tradebot_executor_drawdown_ratio") == 0.0

        send(order(Side.BUY, 10, 100.0, OrderReason.ENTRY_LONG, 1))
        await until("the entry filled", lambda: value("tradebot_executor_orders_filled_total") == 1.0)
        await store.set_last_price("AAA", 90.0, datetime.now(UTC))
        await until("marked at 90", lambda: value("tradebot_executor_unrealized_pnl") == -100.0)
        assert value("tradebot_executor_equity") == 9_900.0
        assert value("tradebot_executor_gross_exposure") == 900.0
        assert value("tradebot_executor_drawdown_ratio") == 0.01
        await store.set_last_price("AAA", 120.0, datetime.now(UTC))
        await until("marked at 120", lambda: value("tradebot_executor_equity") == 10_200.0)
        await store.set_last_price("AAA", 102.0, datetime.now(UTC))
        await until("marked at 102", lambda: value("tradebot_executor_equity") == 10_020.0)
        drawdown = value("tradebot_executor_drawdown_ratio")
        assert drawdown is not None
        assert abs(drawdown - 180.0 / 10_200.0) < 1e-12  # from the peak at 120, not from the start

        send_halt(bus, "s1", True)
        await until("halted", lambda: value("tradebot_executor_strategy_halted") == 1.0)
        send(order(Side.BUY, 1, 102.0, OrderReason.ENTRY_LONG, 2))
        send(order(Side.SELL, 10, 102.0, OrderReason.EXIT_CROSS, 3))  # exits still fill while halted
        await until("both handled", lambda: value("tradebot_executor_orders_received_total") == 3.0)
        assert value("tradebot_executor_orders_rejected_total", reason="halted") == 1.0
        assert value("tradebot_executor_orders_filled_total") == 2.0
        await until("flat", lambda: value("tradebot_executor_gross_exposure") == 0.0)
        assert value("tradebot_executor_realized_pnl") == 20.0
        assert value("tradebot_executor_unrealized_pnl") == 0.0
    finally:
        shutdown.set()
        await task


async def test_each_strategy_is_valued_against_its_own_initial_cash() -> None:
    """Equity, drawdown and the equity curve start from the cash each strategy registered (issue 12.4),
    not from the executor's default; a strategy that registered none gets the default."""
    bus, store, registry, runner = memory_executor()

    def value(name: str, strategy: str) -> float | None:
        return registry.get_sample_value(name, {"strategy": strategy})

    producer = bus.producer("test")
    await store.register_strategy("big", {"initial_cash": 250_000.0})
    await store.register_strategy("plain", {})
    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:
        for n, sid in enumerate(("big", "plain"), start=1):
            made = order(Side.BUY, 10, 100.0, OrderReason.ENTRY_LONG, n, strategy=sid)
            producer.produce(ORDERS, made.model_dump_json().encode(), key=made.symbol.encode())
        producer.flush()
        await until("both filled", lambda: value("tradebot_executor_orders_filled_total", "plain") == 1.0)
        await until("big filled", lambda: value("tradebot_executor_orders_filled_total", "big") == 1.0)
        await store.set_last_price("AAA", 90.0, datetime.now(UTC))
        await until("big marked at 90", lambda: value("tradebot_executor_unrealized_pnl", "big") == -100.0)
        await until(
            "plain marked at 90", lambda: value("tradebot_executor_unrealized_pnl", "plain") == -100.0
        )
        assert value("tradebot_executor_equity", "big") == 249_900.0
        assert value("tradebot_executor_drawdown_ratio", "big") == 100.0 / 250_000.0
        assert value("tradebot_executor_equity", "plain") == 9_900.0
        assert value("tradebot_executor_drawdown_ratio", "plain") == 100.0 / 10_000.0
        projected = "tradebot_executor_store_fills_applied_total"
        await until("both in the store", lambda: registry.get_sample_value(projected) == 2.0)
        assert [equity for _, equity in await store.equity_curve("big")] == [250_000.0]
        assert [equity for _, equity in await store.equity_curve("plain")] == [10_000.0]
    finally:
        shutdown.set()
        await task


async def test_the_signal_projection_skips_a_foreign_record_and_keeps_the_rest_in_order() -> None:
    """A record on `signals` that is not a signal (a foreign producer's) is logged and skipped; the signals
    around it reach the store's log, in order, from one poll batch."""
    bus, store, _, runner = memory_executor()
    sent = [
        Signal(
            strategy_id="s1",
            symbol="AAA",
            ts=datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC),
            direction="up" if i % 2 else "down",
            short_ma=1.0 + i,
            long_ma=1.0,
            price=100.0 + i,
        )
        for i in range(3)
    ]
    producer = bus.producer("test-signals")
    producer.produce(SIGNALS, sent[0].model_dump_json().encode(), key=b"AAA")
    producer.produce(SIGNALS, b"not a signal", key=b"AAA")
    for made in sent[1:]:
        producer.produce(SIGNALS, made.model_dump_json().encode(), key=b"AAA")
    producer.flush()
    producer.close()
    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:

        async def stored() -> list[dict[str, object]]:
            return (await store.signals(Query(limit=10, newest_first=False))).items

        deadline = time.monotonic() + 10
        while len(await stored()) < len(sent):
            assert time.monotonic() < deadline, "the signals were not projected within 10 s"
            await asyncio.sleep(0.05)
        assert await stored() == [made.model_dump(mode="json") for made in sent]
    finally:
        shutdown.set("test over")
        await task


class ConsumersSeen(WrappedBus):
    """The memory bus, noting each consumer's group and how long its fetches may wait."""

    def __init__(self, inner: Bus) -> None:
        super().__init__(inner)
        self.fetch_waits: dict[str, int] = {}

    def consumer(self, group_id: str, topics: Sequence[str], **options: Any) -> Consumer:
        # The fill projection's group is new each start (`<group>-projection-<ns>`): noted without the ns.
        named = group_id.rsplit("-", 1)[0] if "-projection-" in group_id else group_id
        self.fetch_waits[named] = options.get("fetch_wait_ms", LOW_LATENCY_FETCH_WAIT_MS)
        return super().consumer(group_id, topics, **options)


async def test_only_the_order_path_asks_kafka_for_low_latency_fetches() -> None:
    """The orders the executor fills are the live path's next hop (fetches wait 5 ms at most); its
    projections to the store feed people and ask less often (each idle reader's fetches are broker load)."""
    inner, store, _, _ = memory_executor()
    bus = ConsumersSeen(inner)
    runner = ExecutorRunner(
        bus=bus,
        store=store,
        broker=PaperBroker(Costs(), RiskChecks()),
        metrics=ExecutorMetrics(CollectorRegistry()),
        initial_cash=10_000.0,
    )
    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:
        await until("the executor consuming", lambda: runner.ready)
    finally:
        shutdown.set("test over")
        await task
    group = runner.group_id
    assert bus.fetch_waits == {
        group: LOW_LATENCY_FETCH_WAIT_MS,
        f"{group}-projection": PROJECTION_FETCH_WAIT_MS,
        f"{group}-signals": PROJECTION_FETCH_WAIT_MS,
        f"{group}-bars": PROJECTION_FETCH_WAIT_MS,
    }
    assert PROJECTION_FETCH_WAIT_MS > LOW_LATENCY_FETCH_WAIT_MS
