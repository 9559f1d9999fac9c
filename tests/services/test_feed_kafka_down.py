"""The feed while Kafka is away (issue 13.9 and 13.10), against a real broker that the test stops.

With Kafka down the producer's local queue fills. Before, `produce` then retried `BufferError` forever on the
event loop (probes and SIGTERM stopped answering) and delivery errors piled up in a list; the shutdown flush
waited 30 s whatever the grace period. Now the feed stops reading the source at a bound (backpressure), the
event loop keeps running, and after Kafka is back every tick arrives exactly once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from tests.plugins._proc import free_port
from tests.plugins.servers import KafkaBroker
from tests.services.test_feed import make_feed
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.topics import TICKS, pipeline_topics
from tradebot.backtest.data import synthetic_ohlcv, write_ohlcv_csv
from tradebot.feed.client import Feed
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.simulator.server import Metrics, PriceSimulator, ReplayConfig, start_server

BARS = 8000
MAX_QUEUED = 500


class LoopWatch:
    """Measures, from a thread, the longest time the event loop went without running a task."""

    def __init__(self) -> None:
        self.beat = time.monotonic()
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    async def beats(self) -> None:
        while not self._stop.is_set():
            self.beat = time.monotonic()
            await asyncio.sleep(0.02)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.longest = max(self.longest, time.monotonic() - self.beat)

    def start(self) -> asyncio.Task[None]:
        self._thread.start()
        return asyncio.create_task(self.beats())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def feed_over(bus: KafkaBus, port: int, *, flush_timeout_s: float = 20.0) -> Feed:
    return make_feed(bus, port, max_queued=MAX_QUEUED, flush_timeout_s=flush_timeout_s)


async def test_kafka_down_pauses_the_source_keeps_the_loop_free_and_loses_nothing(
    own_kafka: KafkaBroker, tmp_path: Path
) -> None:
    csv = tmp_path / "bars.csv"
    write_ohlcv_csv(synthetic_ohlcv(BARS, seed=7, freq="1min"), csv)
    # A local queue of 2000 records: the old feed hit BufferError after 2000 ticks with Kafka down.
    bus = KafkaBus(own_kafka.bootstrap, client_config={"queue.buffering.max.messages": "2000"})
    await asyncio.to_thread(bus.ensure_topics, pipeline_topics(1))
    port = free_port()
    # ~600 bars a second: the replay outlasts the broker's absence.
    simulator = PriceSimulator(ReplayConfig(csv, "SYM", speed=36_000.0), Metrics(CollectorRegistry()))
    server = await start_server(simulator, "127.0.0.1", port)
    feed = feed_over(bus, port, flush_timeout_s=5.0)
    watch = LoopWatch()
    beats = watch.start()
    shutdown = ShutdownEvent()
    task = asyncio.create_task(feed.run(shutdown))
    try:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_kafka.process.stop)
        down_since = time.monotonic()
        most_queued = 0
        while time.monotonic() - down_since < 8.0:
            most_queued = max(most_queued, feed.producer.poll(0))
            await asyncio.sleep(0.05)
        assert watch.longest < 1.0, f"the event loop was blocked for {watch.longest:.1f}s"
        assert feed.metrics.backpressure._value.get() > 0.0  # the source was paused
        # One source message may hold a few ticks beyond the bound: the queue (the memory) stays flat.
        assert most_queued <= MAX_QUEUED + 10
        await asyncio.to_thread(own_kafka.restart)
        deadline = time.monotonic() + 120.0
        seqs: list[int] = []
        while time.monotonic() < deadline:
            records = await asyncio.to_thread(bus.read_all, TICKS, timeout=30.0)
            seqs = [int(json.loads(r.value)["seq"]) for r in records]
            if len(seqs) >= BARS:
                break
            await asyncio.sleep(1.0)
        assert seqs == list(range(1, BARS + 1))  # nothing lost, nothing twice
        assert watch.longest < 1.0, f"the event loop was blocked for {watch.longest:.1f}s"
    finally:
        shutdown.set()
        await asyncio.wait_for(task, 30.0)
        server.close()
        watch.stop()
        beats.cancel()
        bus.close()


async def test_the_shutdown_flush_fits_the_grace_period_with_kafka_away() -> None:
    """Kafka unreachable at SIGTERM: the flush gives up after its share of the grace period and counts
    what it drops (before: 30 s whatever the grace, then an exception out of `run`)."""
    bus = KafkaBus(f"127.0.0.1:{free_port()}")
    feed = feed_over(bus, free_port(), flush_timeout_s=1.0)
    for seq in range(1, 6):
        feed.handle(
            json.dumps(
                {
                    "type": "tick",
                    "symbol": "SYM",
                    "price": 100.0 + seq,
                    "seq": seq,
                    "ts": "2026-01-01T00:00:00+00:00",
                }
            )
        )
    assert feed.metrics.ticks.labels(symbol="SYM")._value.get() == 5.0
    shutdown = ShutdownEvent()
    shutdown.set()
    started = time.monotonic()
    await asyncio.wait_for(feed.run(shutdown), 10.0)
    took = time.monotonic() - started
    assert took < 3.0, f"the shutdown flush took {took:.1f}s"
    assert feed.metrics.undelivered._value.get() == 5.0
    feed.producer.close()
    bus.close()
