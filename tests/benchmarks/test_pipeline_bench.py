"""`make bench`: the live pipeline on real Kafka and Redis, next to raw confluent-kafka on the same broker.

Prints: raw produce and consume rates; ticks/s through one strategy process (ticks preloaded) and
through feed + strategy + executor with 100 symbols; tick-to-fill latency p50/p99 at 1k and 5k ticks/s.
Targets (issue 4): >= 50k ticks/s through one strategy process; p99 < 20 ms at 5k ticks/s.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer

from tests.e2e.harness import Pipeline, read_topic
from tests.plugins._proc import free_port
from tests.plugins.servers import KafkaBroker, RedisServer

SYMBOLS = [f"S{i:03d}" for i in range(100)]
FAST = {"short_window": 3, "long_window": 8, "qty_step": 0}


def tick_messages(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, (n // len(SYMBOLS) + 1, len(SYMBOLS))), axis=0))
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        row, col = divmod(i, len(SYMBOLS))
        out.append(
            json.dumps(
                {
                    "schema_version": 1,
                    "symbol": SYMBOLS[col],
                    "price": float(prices[row, col]),
                    "size": 1.0,
                    "ts": (t0 + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
                    "seq": row + 1,
                }
            ).encode()
        )
    return out


def raw_rates(kafka: KafkaBroker, messages: list[bytes]) -> tuple[float, float]:
    topic = kafka.create_topic("raw-bench", partitions=6)
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
        }
    )
    start = time.perf_counter()
    for i, value in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=SYMBOLS[i % len(SYMBOLS)].encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    produce_rate = len(messages) / (time.perf_counter() - start)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "raw-bench",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = 0
    start = time.perf_counter()
    while got < len(messages):
        got += len([m for m in consumer.consume(1000, 1.0) if m.error() is None])
    consume_rate = got / (time.perf_counter() - start)
    consumer.close()
    return produce_rate, consume_rate


def raw_transaction_ms(kafka: KafkaBroker) -> tuple[float, float]:
    """p50/p99 of one consume-transform-produce transaction with confluent-kafka alone (the floor of
    each exactly-once hop), with the same retry back-off as our transactional producers."""
    source = kafka.create_topic("txn-bench-in")
    sink = kafka.create_topic("txn-bench-out")
    feeder = Producer({"bootstrap.servers": kafka.bootstrap})
    for _ in range(200):
        feeder.produce(source, b"x")
    feeder.flush(30)
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "transactional.id": "txn-bench",
            "linger.ms": 1,
            "retry.backoff.ms": 5,
            "retry.backoff.max.ms": 50,
        }
    )
    producer.init_transactions(30)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "txn-bench",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 5,
        }
    )
    consumer.subscribe([source])
    times: list[float] = []
    while len(times) < 100:
        if not consumer.consume(2, 1.0):
            continue
        start = time.perf_counter()
        producer.begin_transaction()
        producer.produce(sink, b"y")
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 10
        )
        producer.commit_transaction(10)
        times.append((time.perf_counter() - start) * 1000)
    consumer.close()
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def fresh_topics(kafka: KafkaBroker) -> None:
    """Deletes the pipeline's topics (the services recreate them), so a phase starts from nothing."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    names = [
        t for t in ("ticks", "orders", "fills", "signals", "strategy-state", "ticks.dlq") if t in existing
    ]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(60)
    deadline = time.monotonic() + 60
    while set(names) & set(admin.list_topics(timeout=10).topics) and time.monotonic() < deadline:
        time.sleep(0.2)


def flowing(port: int) -> Callable[[], bool]:
    return lambda: metric(port, "tradebot_strategy_ticks_total") > 1000


def test_pipeline_throughput_and_latency(
    own_kafka: KafkaBroker, own_redis: RedisServer, tmp_path: Path
) -> None:
    n = 300_000
    messages = tick_messages(n)
    produce_rate, consume_rate = raw_rates(own_kafka, messages)
    lines = [
        f"\n== pipeline on one Kafka broker and Redis, {len(SYMBOLS)} symbols ==",
        f"raw confluent-kafka produce   {produce_rate:12,.0f} msgs/s",
        f"raw confluent-kafka consume   {consume_rate:12,.0f} msgs/s",
    ]
    txn_p50, txn_p99 = raw_transaction_ms(own_kafka)
    lines.append(
        f"raw confluent-kafka transaction (consume, produce, commit): p50 {txn_p50:.1f} ms  p99 {txn_p99:.1f} ms"
    )

    # One strategy process over preloaded ticks.
    own_kafka.create_topic("ticks", partitions=6)
    producer = Producer(
        {"bootstrap.servers": own_kafka.bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    for i, value in enumerate(messages):
        while True:
            try:
                producer.produce("ticks", value=value, key=SYMBOLS[i % len(SYMBOLS)].encode())
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    logs = tmp_path / "service-logs"
    logs.mkdir()
    pipeline = Pipeline(own_kafka, own_redis, logs)
    try:
        strategy = pipeline.add(
            "strategy-bench",
            ["strategy"],
            TRADEBOT_STRATEGY_ID="bench",
            TRADEBOT_STRATEGY_SYMBOLS=",".join(SYMBOLS),
            TRADEBOT_STRATEGY_PARAMS=json.dumps(FAST),
            TRADEBOT_LOG_LEVEL="WARNING",
        )
        strategy.start()
        pipeline.wait_http("strategy-bench", "/livez")
        pipeline.wait_until(
            "first ticks", lambda: metric(strategy.http_port, "tradebot_strategy_ticks_total") > 0, 120
        )
        start, first = time.perf_counter(), metric(strategy.http_port, "tradebot_strategy_ticks_total")
        pipeline.wait_until(
            "all ticks", lambda: metric(strategy.http_port, "tradebot_strategy_ticks_total") >= n, 300
        )
        rate = (n - first) / (time.perf_counter() - start)
        lines.append(
            f"one strategy process         {rate:12,.0f} ticks/s  ({rate / consume_rate:.2f}x raw consume; target 50,000)"
        )
        strategy.stop()

        # Feed + strategy + executor at fixed rates: tick-to-fill latency from the fills themselves.
        for per_second in (1_000, 5_000):
            fresh_topics(own_kafka)
            sim_port = free_port()
            interval = len(SYMBOLS) / per_second
            tag = f"r{per_second}"
            sim = pipeline.add(
                f"simulator-{tag}",
                ["simulator", "--port", str(sim_port)],
                TRADEBOT_SYMBOLS=",".join(SYMBOLS),
                TRADEBOT_SIMULATOR_INTERVAL_S=str(interval),
                TRADEBOT_SIMULATOR_VOLATILITY="3.0",
                TRADEBOT_LOG_LEVEL="WARNING",
            )
            executor = pipeline.add(f"executor-{tag}", ["executor"], TRADEBOT_LOG_LEVEL="WARNING")
            strat = pipeline.add(
                f"strategy-{tag}",
                ["strategy"],
                TRADEBOT_STRATEGY_ID=f"lat-{per_second}",
                TRADEBOT_STRATEGY_SYMBOLS=",".join(SYMBOLS),
                TRADEBOT_STRATEGY_PARAMS=json.dumps(FAST),
                TRADEBOT_LOG_LEVEL="WARNING",
            )
            feed = pipeline.add(
                f"feed-{tag}",
                ["feed"],
                TRADEBOT_FEED_URL=f"ws://127.0.0.1:{sim_port}",
                TRADEBOT_LOG_LEVEL="WARNING",
            )
            for service in (executor, strat, sim):
                service.start()
            for name in (f"executor-{tag}", f"strategy-{tag}"):
                pipeline.wait_http(name)
            feed.start()
            pipeline.wait_until("ticks flowing", flowing(strat.http_port), 120)
            before = metric(strat.http_port, "tradebot_strategy_ticks_total")
            time.sleep(20)
            achieved = (metric(strat.http_port, "tradebot_strategy_ticks_total") - before) / 20
            for service in (feed, sim, strat, executor):
                service.stop()
            fills = [
                f
                for f in read_topic(own_kafka.bootstrap, "fills")
                if f["order"]["strategy_id"] == f"lat-{per_second}"
            ]
            lat = np.array(
                [
                    (
                        datetime.fromisoformat(f["fill"]["ts"]) - datetime.fromisoformat(f["order"]["ts"])
                    ).total_seconds()
                    * 1000
                    for f in fills
                ]
            )
            lat = lat[200:] if len(lat) > 400 else lat  # skip the warm-up
            lines.append(
                f"feed+strategy+executor at {per_second:5,} ticks/s (achieved {achieved:7,.0f}): tick-to-fill p50 "
                f"{np.percentile(lat, 50):6.1f} ms  p99 {np.percentile(lat, 99):6.1f} ms  over {len(lat)} fills"
            )
    finally:
        pipeline.stop_all()
        print("\n".join(lines))
