"""The executor's start-up rebuild is bounded (issue 13.8), on real Kafka: the book comes from the compacted
`positions` topic, the remembered order ids from the tail of `fills` (a bounded ring), both streamed.

Before, `rebuild` read the whole `fills` topic into one list and replayed it, and `seen` kept every order id
ever handled: memory and time grew with the history. The 1M-fill figures are `make bench`
(tests/benchmarks/test_executor_rebuild_bench.py); this test checks the behaviour with fewer.
"""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from tests.plugins.servers import KafkaBroker
from tradebot.adapters.bus import Bus
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.topics import FILLS, POSITIONS, pipeline_topics, position_key
from tradebot.core.costs import Costs
from tradebot.core.models import FillStatus, OrderReason, OrderRequest, Side, order_id
from tradebot.executor.broker import PaperBroker
from tradebot.executor.runner import ExecutorMetrics, ExecutorRunner

FILL_COUNT = 20_000
SEEN_MAX = 1_000
SYMBOLS = [f"S{i:02d}" for i in range(20)]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def write_history(bus: Bus, count: int) -> PaperBroker:
    """`count` fills on `fills` and their positions on `positions`, as the executor writes them; returns
    the broker that made them (the book a rebuild must reproduce)."""
    broker = PaperBroker(Costs(commission_pct=0.1))
    producer = bus.producer("history")
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        entry = (i // len(SYMBOLS)) % 2 == 0
        order = OrderRequest(
            id=order_id("s1", symbol, f"tick:{symbol}:{i}"),
            strategy_id="s1",
            symbol=symbol,
            side=Side.BUY if entry else Side.SELL,
            qty=1.0 + i % 3 if entry else max(broker.book("s1", symbol).qty, 1.0),
            reason=OrderReason.ENTRY_LONG if entry else OrderReason.EXIT_CROSS,
            ref_price=100.0 + (i % 50) * 0.5,
            ts=T0 + timedelta(seconds=i),
            cause=f"tick:{symbol}:{i}",
        )
        record = broker.execute(order, now=order.ts, halted=False, last_price=None)
        assert record is not None
        producer.produce(FILLS, record.model_dump_json().encode(), key=symbol.encode())
        if record.fill.status is FillStatus.FILLED:
            producer.produce(
                POSITIONS, record.position.model_dump_json().encode(), key=position_key("s1", symbol)
            )
        if i % 5000 == 4999:
            producer.flush()
    producer.flush()
    producer.close()
    return broker


def test_the_rebuild_reads_positions_and_a_bounded_tail(own_kafka: KafkaBroker) -> None:
    bus = KafkaBus(own_kafka.bootstrap)
    try:
        bus.ensure_topics(pipeline_topics(1))
        made = write_history(bus, FILL_COUNT)
        runner = ExecutorRunner(
            bus=bus,
            store=MemoryStore(),
            broker=PaperBroker(Costs(commission_pct=0.1), seen_max=SEEN_MAX),
            metrics=ExecutorMetrics(CollectorRegistry()),
        )
        tracemalloc.start()
        started = time.monotonic()
        runner.rebuild()
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"\nrebuild of {FILL_COUNT} fills: {took:.2f}s, peak Python allocations {peak / 1e6:.1f} MB")

        # The same book as the fills made, to the cent.
        assert set(runner.broker.books) == set(made.books)
        for key, book in made.books.items():
            rebuilt = runner.broker.books[key]
            assert (rebuilt.qty, rebuilt.avg_price, rebuilt.last_price) == (
                book.qty,
                book.avg_price,
                book.last_price,
            )
            assert abs(rebuilt.realized - book.realized) < 1e-9
            assert abs(rebuilt.commissions - book.commissions) < 1e-9
        # The newest order ids, and no more than the bound: a repeat of the last order is still dropped.
        assert len(runner.broker.seen) == SEEN_MAX
        newest = list(made.seen)[-1]
        assert newest in runner.broker.seen
        # Streamed: the whole history (about 1 KB a fill on `fills`) is never held at once.
        assert peak < 8e6, f"the rebuild held {peak / 1e6:.1f} MB"
    finally:
        bus.close()
