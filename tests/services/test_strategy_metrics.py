"""The strategy's metrics from a running strategy over the memory bus: ticks, signals, orders,
transactions, and its position per symbol read when scraped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from tests.services.test_executor_metrics import until
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.topics import TICKS, pipeline_topics
from tradebot.core.costs import Costs
from tradebot.core.models import Tick
from tradebot.core.params import StrategyParams
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.strategy.runner import StrategyMetrics, StrategyRunner


async def test_counts_and_position_follow_the_ticks() -> None:
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    registry = CollectorRegistry()
    runner = StrategyRunner(
        strategy_id="s1",
        symbols=["AAA", "BBB"],
        params=StrategyParams(short_window=2, long_window=4, sizing="qty:5"),
        costs=Costs(),
        initial_cash=10_000.0,
        bus=bus,
        store=None,
        metrics=StrategyMetrics(registry),
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"strategy": "s1", **labels})

    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:
        await until("started", lambda: value("tradebot_strategy_position", symbol="BBB") == 0.0)
        assert value("tradebot_strategy_transactions_total", result="aborted") == 0.0
        producer = bus.producer("test")
        start = datetime(2024, 1, 2, tzinfo=UTC)
        prices = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 9.0, 13.0]  # falls, then crosses up: a long entry
        for seq, price in enumerate(prices, start=1):
            tick = Tick(symbol="AAA", price=price, ts=start + timedelta(seconds=seq), seq=seq)
            producer.produce(TICKS, tick.model_dump_json().encode(), key=b"AAA")
        producer.flush()
        await until("all ticks", lambda: value("tradebot_strategy_ticks_total") == len(prices))
        assert value("tradebot_strategy_signals_total", direction="up") == 1.0
        orders = value("tradebot_strategy_orders_total", side="buy", reason="entry_long")
        assert orders == 1.0
        assert value("tradebot_strategy_position", symbol="AAA") == 5.0
        assert value("tradebot_strategy_position", symbol="BBB") == 0.0
        committed = value("tradebot_strategy_transactions_total", result="committed")
        assert committed is not None
        assert committed >= 1.0
        # Each committed batch times its whole and its part before the commit, which is within the whole.
        batches = value("tradebot_strategy_batch_seconds_count")
        assert batches == value("tradebot_strategy_process_seconds_count") == committed
        whole, before_commit = (
            value("tradebot_strategy_batch_seconds_sum"),
            value("tradebot_strategy_process_seconds_sum"),
        )
        assert whole is not None
        assert before_commit is not None
        assert 0.0 < before_commit <= whole
    finally:
        shutdown.set()
        await task
