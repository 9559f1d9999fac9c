"""A commit whose outcome the strategy does not know (issue 13.3), on real Kafka: the transaction really
committed, but the call reported it stuck (`TransactionStuckError`, the watchdog's verdict when librdkafka
does not return). The strategy must go on from what is committed (its snapshot on `strategy-state` and its
offsets, read after fencing), not from its state before the batch: that would replay nothing (the
offsets moved on) yet forget the batch's effects, so it would send orders again or miss exits. Every order
must be made exactly once, as a run without the failure makes them."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from tests.adapters._wrapped_bus import WrappedBus
from tests.plugins.servers import KafkaBroker
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import Bus, ConsumedOffsets, TransactionalProducer
from tradebot.adapters.kafka import KafkaBus, TransactionStuckError
from tradebot.adapters.topics import ORDERS, TICKS, pipeline_topics
from tradebot.core.costs import Costs
from tradebot.core.live import LiveStrategy
from tradebot.core.models import Tick
from tradebot.core.params import StrategyParams
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.strategy.runner import StrategyMetrics, StrategyRunner, tick_cause

PARAMS = StrategyParams(short_window=2, long_window=4, sizing="qty:1")
T0 = datetime(2024, 1, 2, tzinfo=UTC)
TICKS_SENT = [
    Tick(symbol="SYM", price=100.0 + 10.0 * math.sin(n / 3.0), ts=T0 + timedelta(seconds=n), seq=n)
    for n in range(1, 201)
]


class StuckAfterCommit:
    """A transactional producer whose `commit_on`-th commit goes through and then reports itself stuck,
    as `KafkaTransactionalProducer` does when its commit thread does not return in time."""

    def __init__(self, inner: TransactionalProducer, bus: StuckCommitBus) -> None:
        self.inner = inner
        self.bus = bus
        self.stuck = False

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        self.inner.produce(topic, value, key, partition)

    def flush(self, timeout: float = 30.0) -> None:
        self.inner.flush(timeout)

    def poll(self, timeout: float = 0.0) -> int:
        return self.inner.poll(timeout)

    def begin(self) -> None:
        self.inner.begin()

    def commit(self, consumed: ConsumedOffsets | None = None) -> None:
        self.inner.commit(consumed)
        self.bus.commits += 1
        if self.bus.commits == self.bus.commit_on:
            self.stuck = True
            raise TransactionStuckError("injected: the commit did not return (it did commit)")

    def abort(self) -> None:
        if not self.stuck:  # a stuck producer cannot abort; the next one fences it
            self.inner.abort()

    def close(self) -> None:
        self.inner.close()


class StuckCommitBus(WrappedBus):
    def __init__(self, inner: Bus, commit_on: int) -> None:
        super().__init__(inner)
        self.commits = 0
        self.commit_on = commit_on

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        return StuckAfterCommit(self.inner.transactional_producer(transactional_id), self)


def reference() -> tuple[list[str], LiveStrategy]:
    """The orders and final state of the strategy over `TICKS_SENT`, without any failure."""
    strategy = LiveStrategy("s1", PARAMS, Costs(), 10_000.0)
    ids: list[str] = []
    for tick in TICKS_SENT:
        for order in strategy.on_price(tick.symbol, tick.price, tick.ts, tick_cause(tick)).orders:
            ids.append(order.id)
            strategy.assume_filled(order)
        # As the runner does for every tick it trades on: the time a force-exit is stamped with.
        strategy.note_tick(tick.symbol, tick.ts)
    return ids, strategy


async def test_an_unknown_commit_outcome_resumes_from_what_is_committed(own_kafka: KafkaBroker) -> None:
    kafka = KafkaBus(own_kafka.bootstrap)
    kafka.ensure_topics(pipeline_topics(1))
    producer = kafka.producer("ticks")
    for tick in TICKS_SENT:
        producer.produce(TICKS, tick.model_dump_json().encode(), key=tick.symbol.encode())
    producer.flush()
    producer.close()
    expected_ids, expected = reference()
    bus = StuckCommitBus(kafka, commit_on=3)
    runner = StrategyRunner(
        strategy_id="s1",
        symbols=["SYM"],
        params=PARAMS,
        costs=Costs(),
        initial_cash=10_000.0,
        bus=bus,
        store=None,
        metrics=StrategyMetrics(CollectorRegistry()),
        batch_max=20,  # several transactions, the third of them "stuck"
    )
    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:
        await until(
            "every tick processed",
            lambda: (
                bus.commits > 3
                and runner.strategy.symbols.get("SYM") is not None
                and runner.strategy.symbols["SYM"].bar_index == expected.symbols["SYM"].bar_index
            ),
            within_s=120.0,
        )
    finally:
        shutdown.set()
        await task
    made = [json.loads(record.value)["id"] for record in kafka.read_all(ORDERS, timeout=30.0)]
    assert len(expected_ids) >= 10  # the ticks cross often enough to trade
    assert made == expected_ids  # none doubled, none lost
    # As JSON: NaN (a day not started) is not equal to itself.
    assert json.dumps(runner.strategy.snapshot(), sort_keys=True) == json.dumps(
        expected.snapshot(), sort_keys=True
    )
    kafka.close()
