"""Warm-up on real Kafka: a bar strategy starting with no snapshot reads the last `longWindow` bars of its
timeframe (from the `bars` topic, or from a dataset named in its settings) and trades on the first new bar;
too short a history is said in its readiness and its log; a restored snapshot is not warmed up again."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from tests.plugins.servers import KafkaBroker
from tradebot.adapters.bus import Record
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.topics import BARS, TICKS, pipeline_topics, strategy_topics
from tradebot.backtest.data import write_ohlcv_csv
from tradebot.core.costs import Costs
from tradebot.core.models import ClosedBar, Tick
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import epoch_ns
from tradebot.strategy.runner import StrategyMetrics, StrategyRunner

T0 = datetime(2024, 6, 3, tzinfo=UTC)
PARAMS = StrategyParams(short_window=20, long_window=200, timeframe="1m", sizing="qty:1")


def closes(n: int) -> list[float]:
    """Falling for all but the last bars, so the first new bar above them crosses up."""
    return [200.0 - 0.5 * i for i in range(n)]


def bar(i: int, close: float, source: str, timeframe: str = "1m") -> ClosedBar:
    return ClosedBar(
        symbol="GOOG",
        timeframe=timeframe,
        ts=T0 + timedelta(minutes=i),
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
        source=source,
    )


def runner(bus: KafkaBus | MemoryBus, **extra: object) -> StrategyRunner:
    return StrategyRunner(
        strategy_id=f"warm-{uuid.uuid4().hex[:6]}",
        symbols=["GOOG"],
        params=PARAMS,
        costs=Costs(),
        initial_cash=100_000.0,
        bus=bus,
        store=None,
        metrics=StrategyMetrics(CollectorRegistry()),
        **extra,  # type: ignore[arg-type]
    )


def publish_history(bus: KafkaBus, n: int) -> None:
    producer = bus.producer("history")
    for i, close in enumerate(closes(n)):
        for source in ("one", "two"):  # two strategies on 1m publish each bar
            producer.produce(BARS, bar(i, close, source).model_dump_json().encode(), key=b"GOOG")
        # Another timeframe's bars on the same topic are not this strategy's history.
        producer.produce(BARS, bar(i, 1.0, "other", "5m").model_dump_json().encode(), key=b"GOOG")
    producer.flush()
    producer.close()


def first_new_bar_orders(strategy_runner: StrategyRunner, n: int) -> list[str]:
    """Ticks of the minute after the history (one of them in the last history minute, skipped) and one of
    the next minute, which closes the first new bar: the orders the batch produced."""
    bus = MemoryBus()
    # The pipeline's topics and the strategy's own state topic (it makes that one on its first rebuild).
    bus.ensure_topics([*pipeline_topics(1), *strategy_topics(strategy_runner.strategy_id)])
    stamps = [T0 + timedelta(minutes=n - 1, seconds=30), T0 + timedelta(minutes=n, seconds=5)]
    stamps.append(T0 + timedelta(minutes=n + 1, seconds=1))
    records = [
        Record(
            TICKS,
            0,
            i,
            b"GOOG",
            Tick(symbol="GOOG", price=2000.0, ts=ts, seq=i + 1).model_dump_json().encode(),
            0,
        )
        for i, ts in enumerate(stamps)
    ]
    producer = bus.producer("out")
    strategy_runner.process_batch(records, producer)
    producer.flush()
    return [o.decode() for o in (r.value for r in bus.read_all("orders"))]


def started_after_history(
    kafka: KafkaBroker, n: int, caplog: pytest.LogCaptureFixture
) -> tuple[StrategyRunner, float]:
    """A strategy started afresh (rebuilt) once `n` bars are on `bars`, and how long its rebuild took."""
    bus = KafkaBus(kafka.bootstrap)
    bus.ensure_topics(pipeline_topics(1))
    publish_history(bus, n)
    fresh = runner(bus)
    started = time.perf_counter()
    with caplog.at_level(logging.INFO):
        fresh.rebuild()
    seconds = time.perf_counter() - started
    bus.close()
    return fresh, seconds


def test_a_fresh_bar_strategy_warms_up_from_the_bars_topic_and_trades_the_first_new_bar(
    own_kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    fresh, seconds = started_after_history(own_kafka, 260, caplog)
    print(f"warm-up of 200 1m bars from the bars topic (780 records): {seconds:.3f} s")
    assert fresh.history_short() == []
    assert "warmed up from history" in caplog.text
    state = fresh.strategy.symbols["GOOG"]
    assert state.crossover.long_ma.count == 200
    assert state.crossover.prev_long == pytest.approx(sum(closes(260)[-200:]) / 200)
    builder = state.bars
    assert builder is not None
    assert builder.history_end_ns == epoch_ns(T0 + timedelta(minutes=260))
    orders = first_new_bar_orders(fresh, 260)
    assert len(orders) == 1  # the first new bar's close crossed up: an entry, no waiting 200 bars
    assert '"reason":"entry_long"' in orders[0]
    assert builder.late == 0  # the tick inside the history was skipped, not late


def test_too_short_a_history_is_said_in_readiness_and_the_log(
    own_kafka: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    fresh, _ = started_after_history(own_kafka, 12, caplog)
    assert fresh.history_short() == ["GOOG: 12 of 200 1m bars"]
    assert "history too short to trade on the first bar" in caplog.text


def test_a_dataset_named_in_the_settings_is_the_history(tmp_path: Path) -> None:
    bus = MemoryBus()  # nothing on `bars`: the file alone
    bus.ensure_topics(pipeline_topics(1))
    index = pd.date_range(T0, periods=400, freq="30s", tz="UTC", name="ts")
    prices = [200.0 - 0.25 * i for i in range(400)]
    frame = pd.DataFrame(
        {"open": prices, "high": prices, "low": prices, "close": prices, "volume": 1.0}, index=index
    )
    path = tmp_path / "goog-30s.csv"
    write_ohlcv_csv(frame, path)  # 30 s bars: aggregated into the 1m of the strategy
    fresh = runner(bus, history_files={"GOOG": str(path)})
    fresh.rebuild()
    assert fresh.history_short() == []
    assert fresh.strategy.symbols["GOOG"].crossover.prev_long == pytest.approx(
        sum(prices[1::2][-200:]) / 200
    )  # each minute's close
    assert len(first_new_bar_orders(fresh, 200)) == 1
