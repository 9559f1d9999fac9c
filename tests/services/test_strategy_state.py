"""The strategy's state at the largest configuration allowed (issue 13.4), on real Kafka: every moving
average window full at `MAX_WINDOW`, for 20 symbols. As one record the snapshot outgrows Kafka's 1 MB
default record limit and every transaction aborts; as one record per strategy and symbol each stays
under it, the transactions commit, and a restart restores exactly the state that was committed."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from tests.plugins.servers import KafkaBroker
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import Record
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.topics import TICKS, pipeline_topics, strategy_state_topic
from tradebot.core.costs import Costs
from tradebot.core.models import Tick
from tradebot.core.params import MAX_WINDOW, StrategyParams
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.strategy.runner import StrategyMetrics, StrategyRunner

KAFKA_RECORD_LIMIT = 1_000_000  # librdkafka's message.max.bytes default (the broker's is 1 MiB)
SYMBOLS = [f"S{n:02d}" for n in range(20)]
PARAMS = StrategyParams(short_window=MAX_WINDOW - 1, long_window=MAX_WINDOW, sizing="qty:1")


def runner(bus: KafkaBus, registry: CollectorRegistry) -> StrategyRunner:
    return StrategyRunner(
        strategy_id="big",
        symbols=SYMBOLS,
        params=PARAMS,
        costs=Costs(),
        initial_cash=1_000_000.0,
        bus=bus,
        store=None,
        metrics=StrategyMetrics(registry),
    )


def produce_ticks(bus: KafkaBus) -> int:
    """Every symbol's windows filled (one symbol after another, so a batch touches few), then one round of
    every symbol: a transaction with every symbol's state in it."""
    rng = random.Random(5)
    t0 = datetime(2024, 1, 2, tzinfo=UTC)
    producer = bus.producer("ticks")
    count = 0

    def send(symbol: str, seq: int) -> None:
        nonlocal count
        # Prices with every digit a float has: the largest JSON a window can take.
        tick = Tick(symbol=symbol, price=100.0 + rng.random(), ts=t0 + timedelta(seconds=seq), seq=seq)
        producer.produce(TICKS, tick.model_dump_json().encode(), key=symbol.encode())
        count += 1

    for symbol in SYMBOLS:
        for seq in range(1, MAX_WINDOW + 1):
            send(symbol, seq)
    for symbol in SYMBOLS:
        send(symbol, MAX_WINDOW + 1)
    producer.flush()
    producer.close()
    return count


async def test_the_largest_state_allowed_commits_and_is_restored(own_kafka: KafkaBroker) -> None:
    bus = KafkaBus(own_kafka.bootstrap)
    bus.ensure_topics(pipeline_topics(1))
    total = await asyncio.to_thread(produce_ticks, bus)
    registry = CollectorRegistry()
    first = runner(bus, registry)
    shutdown = ShutdownEvent()
    task = asyncio.create_task(first.run(shutdown))

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"strategy": "big", **labels}) or 0.0

    try:
        await until(
            "every tick processed", lambda: sample("tradebot_strategy_ticks_total") == total, within_s=300.0
        )
    finally:
        shutdown.set()
        await task
    assert sample("tradebot_strategy_transactions_total", result="aborted") == 0
    state = first.strategy.snapshot()
    assert all(len(s["long_ma"]["recent"]) == MAX_WINDOW for s in state["symbols"].values())
    whole = len(json.dumps(state).encode())
    records = bus.read_all(strategy_state_topic("big"), timeout=60.0)
    largest = max(len(record.value) for record in records)
    print(f"one snapshot record: {whole} bytes; largest state record now: {largest} bytes")
    assert whole > KAFKA_RECORD_LIMIT > largest
    assert {record.key for record in records} >= {b"big", *(f"big/{s}".encode() for s in SYMBOLS)}

    restarted = runner(bus, CollectorRegistry())
    await asyncio.to_thread(restarted.rebuild)
    # As JSON: NaN (a day not started) is not equal to itself.
    assert json.dumps(restarted.strategy.snapshot(), sort_keys=True) == json.dumps(state, sort_keys=True)
    bus.close()


def test_a_symbols_state_from_an_earlier_strategy_is_not_restored() -> None:
    """Each symbol's record carries its head's generation: a symbol last traded under earlier parameters keeps
    its old record on the compacted topic, which a later strategy with those parameters again must not take."""
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    one, other = StrategyParams(short_window=2, long_window=3), StrategyParams(short_window=3, long_window=4)
    t0 = datetime(2024, 1, 2, tzinfo=UTC)

    def run(params: StrategyParams, symbols: list[str]) -> StrategyRunner:
        strategy = StrategyRunner(
            strategy_id="gen",
            symbols=["XXX", "YYY"],
            params=params,
            costs=Costs(),
            initial_cash=10_000.0,
            bus=bus,
            store=None,
            metrics=StrategyMetrics(CollectorRegistry()),
        )
        strategy.rebuild()
        records = [
            Record(
                TICKS, 0, n, s.encode(), Tick(symbol=s, price=100.0 + n, ts=t0).model_dump_json().encode(), 0
            )
            for n, s in enumerate(symbols)
        ]
        producer = bus.transactional_producer("strategy-gen")
        producer.begin()
        strategy.process_batch(records, producer)
        producer.commit()
        producer.close()
        return strategy

    run(one, ["XXX", "YYY"])
    run(other, ["XXX"])  # new parameters: a new strategy, whose head replaces the first one's
    run(one, ["XXX"])  # the first parameters again: a new strategy again; YYY's record is the first one's
    restored = StrategyRunner(
        strategy_id="gen",
        symbols=["XXX", "YYY"],
        params=one,
        costs=Costs(),
        initial_cash=10_000.0,
        bus=bus,
        store=None,
        metrics=StrategyMetrics(CollectorRegistry()),
    )
    restored.rebuild()
    assert set(restored.strategy.symbols) == {"XXX"}
