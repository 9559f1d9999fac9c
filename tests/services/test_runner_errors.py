"""The runners catch what can happen and nothing else (issue 12.7): the executor and the feed ride out a
store that is away (a real Redis port with nobody listening, or a `StoreError`), but a bug stops them,
so the supervisor restarts the service and the logs show why."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server

from tests.plugins._proc import free_port
from tests.services.test_executor_metrics import memory_executor, send_halt, until
from tests.services.test_feed import make_feed, topic_values
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.store import StoreError
from tradebot.adapters.topics import TICKS, pipeline_topics
from tradebot.backtest.data import synthetic_ohlcv, write_ohlcv_csv
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.simulator.server import Metrics, PriceSimulator, ReplayConfig, start_server


class FailingStore(MemoryStore):
    """A memory store whose registrations and price writes raise `failure` while it is set."""

    failure: BaseException | None = None

    async def strategies(self) -> list[dict[str, Any]]:
        if self.failure is not None:
            raise self.failure
        return await super().strategies()

    async def set_last_price(self, symbol: str, price: float, ts: datetime) -> None:
        if self.failure is not None:
            raise self.failure
        await super().set_last_price(symbol, price, ts)


async def test_the_executor_rides_out_a_store_outage_but_a_bug_stops_it() -> None:
    store = FailingStore()
    bus, _, registry, runner = memory_executor(store)

    def halted() -> float | None:
        return registry.get_sample_value("tradebot_executor_strategy_halted", {"strategy": "s1"})

    await store.register_strategy("s1", {})
    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:
        await until("running", lambda: runner.ready and halted() == 0.0)
        store.failure = StoreError("redis strategies: Connection refused", retriable=True)
        await asyncio.sleep(0.75)  # three rounds of the store watcher, each failing
        assert not task.done()
        assert runner.ready
        send_halt(bus, "s1", True)
        store.failure = None
        await until("the halt seen once the store is back", lambda: halted() == 1.0)

        store.failure = ZeroDivisionError("a bug behind the store")
        with pytest.raises(ExceptionGroup) as stopped:
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        assert stopped.group_contains(ZeroDivisionError)
        assert not runner.ready
    finally:
        shutdown.set()
        await asyncio.gather(task, return_exceptions=True)


async def replaying_simulator(tmp_path: Path, rows: int) -> tuple[Server, int]:
    csv = tmp_path / "bars.csv"
    write_ohlcv_csv(synthetic_ohlcv(rows, seed=4, freq="1min"), csv)
    port = free_port()
    simulator = PriceSimulator(ReplayConfig(csv, "SYM", speed=None), Metrics(CollectorRegistry()))
    return await start_server(simulator, "127.0.0.1", port), port


async def test_the_feed_publishes_while_redis_is_unreachable(tmp_path: Path) -> None:
    server, port = await replaying_simulator(tmp_path, 500)
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    feed = make_feed(bus, port)
    feed.store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    feed.price_flush_s = 0.05
    shutdown = ShutdownEvent()
    task = asyncio.create_task(feed.run(shutdown))
    try:
        await until("every tick published", lambda: len(topic_values(bus, TICKS)) == 500, within_s=30.0)
        await asyncio.sleep(0.2)  # price cache writes keep failing
        assert not task.done()
    finally:
        shutdown.set()
        await task  # the failing last write at shutdown does not fail the feed
        server.close()
        await feed.store.close()


async def test_a_bug_in_the_feeds_price_cache_stops_the_feed(tmp_path: Path) -> None:
    server, port = await replaying_simulator(tmp_path, 50)
    bus = MemoryBus()
    bus.ensure_topics(pipeline_topics(1))
    store = FailingStore()
    store.failure = ZeroDivisionError("a bug behind the store")
    feed = make_feed(bus, port)
    feed.store = store
    feed.price_flush_s = 0.05
    try:
        with pytest.raises(ExceptionGroup) as stopped:
            await asyncio.wait_for(feed.run(ShutdownEvent()), 10.0)
        assert stopped.group_contains(ZeroDivisionError)
    finally:
        server.close()
