"""The strategy's state as records of its state topic (`tradebot.strategy.state`).

At the largest configuration allowed (issue 13.4), on real Kafka: every moving average window full at
`MAX_WINDOW`, for 20 symbols. As one record the snapshot outgrows Kafka's 1 MB default record limit and
every transaction aborts; in groups sized by the most a symbol's state can take each record stays under
it, the transactions commit, and a restart restores exactly the state that was committed. With small
windows a group holds many symbols: a transaction writes a few state records, not one per symbol."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from tests.plugins.servers import KafkaBroker
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import Bus, Record
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.topics import TICKS, pipeline_topics, strategy_state_topic
from tradebot.core.costs import Costs
from tradebot.core.models import Tick
from tradebot.core.params import MAX_WINDOW, StrategyParams
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.strategy.runner import StrategyMetrics, StrategyRunner
from tradebot.strategy.state import STATE_RECORD_BUDGET, StateLayout, symbol_state_bound

KAFKA_RECORD_LIMIT = 1_000_000  # librdkafka's message.max.bytes default (the broker's is 1 MiB)
SYMBOLS = [f"S{n:02d}" for n in range(20)]
PARAMS = StrategyParams(short_window=MAX_WINDOW - 1, long_window=MAX_WINDOW, sizing="qty:1")


def make_runner(
    bus: Bus,
    strategy_id: str,
    symbols: list[str],
    params: StrategyParams,
    registry: CollectorRegistry | None = None,
) -> StrategyRunner:
    return StrategyRunner(
        strategy_id=strategy_id,
        symbols=symbols,
        params=params,
        costs=Costs(),
        initial_cash=1_000_000.0,
        bus=bus,
        store=None,
        metrics=StrategyMetrics(registry or CollectorRegistry()),
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
    first = make_runner(bus, "big", SYMBOLS, PARAMS, registry)
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
    assert b"big" in {record.key for record in records}

    restarted = make_runner(bus, "big", SYMBOLS, PARAMS)
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
        strategy = make_runner(bus, "gen", ["XXX", "YYY"], params)
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
    restored = make_runner(bus, "gen", ["XXX", "YYY"], one)
    restored.rebuild()
    assert set(restored.strategy.symbols) == {"XXX"}


MANY = [f"M{n:03d}" for n in range(100)]
SMALL = StrategyParams(short_window=3, long_window=8, sizing="qty:1")


def state_runner(bus: MemoryBus, symbols: list[str] = MANY) -> StrategyRunner:
    return make_runner(bus, "grp", symbols, SMALL)


def tick_records(prices: list[tuple[str, float]], first_offset: int) -> list[Record]:
    t0 = datetime(2024, 1, 2, tzinfo=UTC)
    return [
        Record(
            TICKS,
            0,
            first_offset + n,
            symbol.encode(),
            Tick(
                symbol=symbol,
                price=price,
                ts=t0 + timedelta(seconds=first_offset + n),
                seq=first_offset + n + 1,
            )
            .model_dump_json()
            .encode(),
            0,
        )
        for n, (symbol, price) in enumerate(prices)
    ]


def commit_batch(bus: MemoryBus, strategy: StrategyRunner, records: list[Record]) -> list[Record]:
    """One batch in its own transaction; the state records it wrote."""
    before = len(bus.read_all(strategy.state_topic))
    producer = bus.transactional_producer("strategy-grp")
    producer.begin()
    strategy.process_batch(records, producer)
    producer.commit()
    producer.close()
    strategy.committed()
    return bus.read_all(strategy.state_topic)[before:]


def test_a_batch_over_every_symbol_writes_a_few_state_records_and_restores_exactly() -> None:
    """100 symbols, small windows: a batch touching every symbol writes its groups and the head (not 101
    records), a later batch touching two symbols rewrites only the groups holding them, and a restart after
    batches touching different symbols restores exactly the strategy that committed them."""
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    strategy = state_runner(bus)
    strategy.rebuild()
    rng = random.Random(7)
    offset = 0
    for _ in range(12):  # every symbol's windows full, and crosses (orders in flight) along the way
        batch = [(symbol, 100.0 + 10 * rng.random()) for symbol in MANY]
        written = commit_batch(bus, strategy, tick_records(batch, offset))
        offset += len(batch)
    groups = strategy.layout.groups
    assert 1 < len(groups) < 10, groups
    assert sorted(record.key or b"" for record in written) == sorted(
        [b"grp", *(f"grp#{n}".encode() for n in range(len(groups)))]
    )
    two = [groups[0][0], groups[-1][-1]]
    written = commit_batch(bus, strategy, tick_records([(s, 50.0) for s in two], offset))
    assert sorted(record.key or b"" for record in written) == sorted(
        [b"grp", b"grp#0", f"grp#{len(groups) - 1}".encode()]
    )
    offset += 2
    # A batch touching a symbol of the middle group only: the others keep their states encoded before.
    middle = groups[len(groups) // 2][1]
    commit_batch(bus, strategy, tick_records([(middle, 75.0), (middle, 76.0)], offset))
    assert strategy.strategy.counters.untracked_orders == 0
    assert any(strategy.strategy.in_flight.values())

    restarted = state_runner(bus)
    restarted.rebuild()
    # As JSON: NaN (a day not started) is not equal to itself.
    assert json.dumps(restarted.strategy.snapshot(), sort_keys=True) == json.dumps(
        strategy.strategy.snapshot(), sort_keys=True
    )
    assert restarted.layout.generation != strategy.layout.generation


def test_a_state_written_one_record_per_symbol_is_restored_and_then_written_in_groups() -> None:
    """The layout of the last version (a version 1 head and a record per symbol, of its generation): an
    upgraded strategy restores it, symbols and all, and its first commit writes every group anew."""
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    before = state_runner(bus, symbols=MANY[:5])
    before.rebuild()
    producer = bus.transactional_producer("strategy-grp")
    producer.begin()
    before.process_batch(tick_records([(s, 100.0 + n) for n, s in enumerate(MANY[:5] * 9)], 0), producer)
    producer.abort()  # only its strategy is wanted: the records are written below as the last version did
    producer.close()
    live = before.strategy
    legacy = bus.transactional_producer("legacy")
    legacy.begin()
    for symbol in MANY[:5]:
        state = {**live.symbol_snapshot(symbol), "generation": "g1"}
        legacy.produce(before.state_topic, json.dumps(state).encode(), key=f"grp/{symbol}".encode())
    legacy.produce(
        before.state_topic, json.dumps({**live.head_snapshot(), "generation": "g1"}).encode(), key=b"grp"
    )
    legacy.commit()
    legacy.close()

    upgraded = state_runner(bus, symbols=MANY[:5])
    upgraded.rebuild()
    assert json.dumps(upgraded.strategy.snapshot(), sort_keys=True) == json.dumps(
        live.snapshot(), sort_keys=True
    )
    written = commit_batch(bus, upgraded, tick_records([(MANY[0], 101.0)], 100))
    assert sorted(record.key or b"" for record in written) == [b"grp", b"grp#0"]
    head = json.loads(written[-1].value)
    assert head["version"] == 2
    assert set(json.loads(written[0].value)["symbols"]) == set(MANY[:5])


def test_groups_are_sized_by_the_most_a_symbols_state_can_take() -> None:
    """Windows at their largest: each group holds as many symbols as fit Kafka's record limit at their
    bound, whatever the strategy's state happens to be now."""
    big = StateLayout("s", PARAMS, SYMBOLS, "g")
    small = StateLayout("s", SMALL, MANY, "g")
    for layout, params in ((big, PARAMS), (small, SMALL)):
        assert (
            max(map(len, layout.groups)) * symbol_state_bound(params)
            <= STATE_RECORD_BUDGET
            < KAFKA_RECORD_LIMIT
        )
        assert sorted(s for group in layout.groups for s in group) == sorted(layout.group_of)
    assert len(small.groups) < len(MANY) / 10
