"""The feed against real WebSocket servers (our simulator, and a hostile one): validation, dead
letters, reconnects with backoff, resuming after the last sequence number."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import ServerConnection, serve

from tests.plugins._proc import free_port
from tradebot.adapters.bus import Bus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.topics import TICKS, TICKS_DLQ, pipeline_topics
from tradebot.backtest.data import synthetic_ohlcv, write_ohlcv_csv
from tradebot.feed.client import Feed, FeedMetrics, backoff_delay
from tradebot.feed.codecs import SimulatorCodec
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.simulator.server import GbmConfig, Metrics, PriceSimulator, ReplayConfig, start_server


def make_feed(bus: Bus, port: int, **overrides: Any) -> Feed:
    """A feed of the simulator on `port` into `bus`, reconnecting fast; `overrides` replace its arguments."""
    arguments: dict[str, Any] = {
        "codec": SimulatorCodec(),
        "url": f"ws://127.0.0.1:{port}",
        "symbols": [],
        "producer": bus.producer("feed"),
        "store": None,
        "metrics": FeedMetrics(CollectorRegistry()),
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        "seed": 1,
    }
    return Feed(**{**arguments, **overrides})


def topic_values(bus: MemoryBus, topic: str) -> list[dict[str, object]]:
    return [json.loads(r.value) for r in bus.read_all(topic)]


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(attempt, 0.5, 8.0, rng) for attempt in range(12) for _ in range(20)]
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert max(delays[:20]) <= 0.5
    assert len({round(d, 6) for d in delays}) > 200  # jittered, not a fixed schedule


async def test_replay_resumes_after_a_simulator_restart(tmp_path: Path) -> None:
    csv = tmp_path / "bars.csv"
    write_ohlcv_csv(synthetic_ohlcv(3000, seed=5, freq="1min"), csv)
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(3))
    port = free_port()
    # ~60 bars a second: slow enough to stop the simulator in the middle.
    simulator = PriceSimulator(ReplayConfig(csv, "SYM", speed=3600.0), Metrics(CollectorRegistry()))
    server = await start_server(simulator, "127.0.0.1", port)
    feed = make_feed(bus, port)
    shutdown = ShutdownEvent()
    task = asyncio.create_task(feed.run(shutdown))
    await asyncio.sleep(1.0)
    server.close()
    await server.wait_closed()
    seen_before = len(topic_values(bus, TICKS))
    assert 0 < seen_before < 3000
    await asyncio.sleep(0.5)
    fast = PriceSimulator(ReplayConfig(csv, "SYM", speed=None), Metrics(CollectorRegistry()))
    server = await start_server(fast, "127.0.0.1", port)
    for _ in range(200):
        if len(topic_values(bus, TICKS)) >= 3000:
            break
        await asyncio.sleep(0.05)
    shutdown.set()
    await task
    server.close()
    seqs = [t["seq"] for t in topic_values(bus, TICKS)]
    assert seqs == list(range(1, 3001))  # nothing lost, nothing twice
    assert feed.metrics.reconnects._value.get() >= 1


async def test_a_restarted_live_source_is_followed_from_its_new_sequence() -> None:
    """A live simulator counts from 1 again after a restart (e.g. a rolled pod): the feed must follow it,
    not drop every tick as a duplicate until the new sequence passes the old one."""
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    port = free_port()

    async def live_source() -> tuple[Any, asyncio.Event, asyncio.Task[None]]:
        simulator = PriceSimulator(GbmConfig(["SYM"], interval_s=0.01), Metrics(CollectorRegistry()))
        server = await start_server(simulator, "127.0.0.1", port)
        stop = asyncio.Event()
        return server, stop, asyncio.create_task(simulator.broadcast_walks(stop))

    server, stop, walks = await live_source()
    feed = make_feed(bus, port)
    shutdown = ShutdownEvent()
    task = asyncio.create_task(feed.run(shutdown))
    for _ in range(200):
        if len(topic_values(bus, TICKS)) >= 100:
            break
        await asyncio.sleep(0.05)
    before = [int(str(t["seq"])) for t in topic_values(bus, TICKS)]
    assert len(before) >= 100
    stop.set()
    await walks
    server.close()
    await server.wait_closed()

    server, stop, walks = await live_source()
    for _ in range(200):
        after = [int(str(t["seq"])) for t in topic_values(bus, TICKS)][len(before) :]
        if len(after) >= 20:
            break
        await asyncio.sleep(0.05)
    shutdown.set()
    await task
    stop.set()
    await walks
    server.close()
    assert len(after) >= 20, "no tick published after the source restarted"
    assert after[0] < before[-1]  # the new sequence, followed from where the restarted source began
    assert after == sorted(after)
    assert feed.metrics.reconnects._value.get() >= 1


async def test_bad_messages_go_to_the_dead_letter_topic_and_the_feed_keeps_going() -> None:
    messages = [
        "garbage",
        json.dumps({"type": "tick", "symbol": "AAA", "price": -3, "ts": "2024-01-01T00:00:00Z", "seq": 1}),
        json.dumps({"type": "tick", "symbol": "AAA", "price": 10.0, "ts": "2024-01-01T00:00:00Z", "seq": 2}),
        json.dumps({"type": "tick", "symbol": "AAA", "price": 11.0, "ts": "2024-01-01T00:00:01", "seq": 3}),
        json.dumps({"type": "weird"}),
        json.dumps({"type": "tick", "symbol": "AAA", "price": 12.0, "ts": "2024-01-01T00:00:02Z", "seq": 4}),
    ]

    async def hostile(connection: ServerConnection) -> None:
        await connection.recv()  # the subscription
        for message in messages:
            await connection.send(message)
        await asyncio.sleep(5)

    port = free_port()
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    async with serve(hostile, "127.0.0.1", port):
        feed = make_feed(bus, port)
        shutdown = ShutdownEvent()
        task = asyncio.create_task(feed.run(shutdown))
        for _ in range(100):
            if len(topic_values(bus, TICKS)) == 2:
                break
            await asyncio.sleep(0.05)
        shutdown.set()
        await task
    assert [t["price"] for t in topic_values(bus, TICKS)] == [10.0, 12.0]
    letters = topic_values(bus, TICKS_DLQ)
    reasons = [str(letter["reason"]) for letter in letters]
    assert len(letters) == 4
    assert "not JSON" in reasons[0]
    assert reasons[1].startswith("price")
    assert reasons[2].startswith("ts")
    assert reasons[3].startswith("type")
    assert letters[0]["raw"] == "garbage"
    metrics = feed.metrics
    assert metrics.received._value.get() == 6
    rejected = {
        code: metrics.rejected.labels(reason=code)._value.get()
        for code in ("not_json", "invalid_field", "unknown_type", "missing_field")
    }
    assert rejected == {"not_json": 1, "invalid_field": 2, "unknown_type": 1, "missing_field": 0}
    assert [metrics.ticks.labels(symbol="AAA")._value.get()] == [2]


async def test_a_replay_with_live_timestamps_is_stamped_when_sent(tmp_path: Path) -> None:
    csv = tmp_path / "bars.csv"
    write_ohlcv_csv(synthetic_ohlcv(200, seed=2, freq="1D"), csv)  # daily bars from 2020
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    port = free_port()
    replay = ReplayConfig(csv, "SYM", speed=None, live_timestamps=True)
    server = await start_server(PriceSimulator(replay, Metrics(CollectorRegistry())), "127.0.0.1", port)
    started = datetime.now(UTC)
    feed = make_feed(bus, port)
    shutdown = ShutdownEvent()
    task = asyncio.create_task(feed.run(shutdown))
    for _ in range(200):
        if len(topic_values(bus, TICKS)) >= 200:
            break
        await asyncio.sleep(0.05)
    shutdown.set()
    await task
    server.close()
    ended = datetime.now(UTC)
    ticks = topic_values(bus, TICKS)
    stamps = [datetime.fromisoformat(str(t["ts"])) for t in ticks]
    assert [t["seq"] for t in ticks] == list(range(1, 201))
    assert all(started <= ts <= ended for ts in stamps)
    assert stamps == sorted(stamps)
    # The prices are the file's.
    closes = synthetic_ohlcv(200, seed=2, freq="1D")["close"].tolist()
    assert [t["price"] for t in ticks] == pytest.approx(closes)
    # Computed at scrape time: it grows while nothing arrives.
    registry = feed.metrics.registry
    first = registry.get_sample_value("tradebot_feed_seconds_since_last_tick")
    await asyncio.sleep(0.3)
    later = registry.get_sample_value("tradebot_feed_seconds_since_last_tick")
    assert first is not None
    assert later is not None
    assert 0.0 <= first < (ended - started).total_seconds() + 1
    assert later >= first + 0.25


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.text(max_size=100) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_fuzzed_input_is_dead_lettered_never_raised(raw: str) -> None:
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    feed = make_feed(bus, 1)
    published = feed.handle(raw)
    ticks = topic_values(bus, TICKS)
    letters = topic_values(bus, TICKS_DLQ)
    assert published == len(ticks)
    assert len(ticks) + len(letters) <= 1
    assert all(letter["reason"] for letter in letters)


def test_duplicates_dropped_and_gaps_counted() -> None:
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    feed = make_feed(bus, 1)
    for seq in (1, 2, 2, 1, 5, 6):
        feed.handle(
            json.dumps(
                {"type": "tick", "symbol": "A", "price": 1.0, "ts": "2024-01-01T00:00:00Z", "seq": seq}
            )
        )
    assert [t["seq"] for t in topic_values(bus, TICKS)] == [1, 2, 5, 6]
    assert feed.metrics.duplicates._value.get() == 2
    assert feed.metrics.gaps._value.get() == 2


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("depth", [40, 5_000, 100_000])
def test_a_deeply_nested_message_is_dead_lettered_with_its_reason(depth: int) -> None:
    """Issue 14.10: `json.loads` raised RecursionError out of the codec and stopped the feed."""
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    feed = make_feed(bus, 1)
    assert feed.handle("[" * depth + "]" * depth) == 0
    assert feed.handle('{"type": "tick", "symbol": ' + "[" * depth + "]" * depth + "}") == 0
    letters = topic_values(bus, TICKS_DLQ)
    assert [letter["reason"] for letter in letters] == [
        f"nested {depth} levels deep, more than 32",
        f"nested {depth + 1} levels deep, more than 32",  # inside the tick's own object
    ]
    assert (
        feed.metrics.registry.get_sample_value(
            "tradebot_feed_messages_rejected_total", {"reason": "too_deep"}
        )
        == 2
    )
