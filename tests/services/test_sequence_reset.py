"""A simulator restart mid-run (issue 13.5), on real Kafka and Redis: the restarted simulator counts its
sequence from 1 again (with the same seed, even the same prices), the feed follows it, and the orders the
strategy makes after the restart are new orders: each has its own id and the executor fills it, rather
than dropping it as a duplicate of an order made before the restart from the tick with the same number."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server

from tests.plugins._proc import free_port
from tests.plugins.servers import KafkaBroker, RedisServer
from tests.services.test_executor_handover import committed_fills, executor
from tests.services.test_executor_metrics import until
from tests.services.test_feed import make_feed
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.topics import ORDERS, TICKS, pipeline_topics
from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.simulator.server import GbmConfig, Metrics, PriceSimulator, start_server
from tradebot.strategy.runner import StrategyMetrics, StrategyRunner


class Simulator:
    """A live simulator on a fixed port, stopped and started again like a rolled pod."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Server | None = None
        self.stop = asyncio.Event()
        self.walks: asyncio.Task[None] | None = None

    async def start(self) -> None:
        simulator = PriceSimulator(
            GbmConfig(["SYM"], interval_s=0.01, volatility=2.0, seed=7), Metrics(CollectorRegistry())
        )
        self.server = await start_server(simulator, "127.0.0.1", self.port)
        self.stop = asyncio.Event()
        self.walks = asyncio.create_task(simulator.broadcast_walks(self.stop))

    async def close(self) -> None:
        self.stop.set()
        if self.walks is not None:
            await self.walks
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_orders_after_a_simulator_restart_are_filled_not_dropped(
    own_kafka: KafkaBroker, redis_server: RedisServer
) -> None:
    bus = KafkaBus(own_kafka.bootstrap)
    bus.ensure_topics(pipeline_topics(1))
    store = RedisStore(redis_server.url, prefix=f"seq-reset-{uuid.uuid4().hex[:8]}")
    simulator = Simulator(free_port())
    await simulator.start()
    feed = make_feed(bus, simulator.port)
    strategy = StrategyRunner(
        strategy_id="s1",
        symbols=["SYM"],
        params=StrategyParams(short_window=2, long_window=3, sizing="qty:5"),
        costs=Costs(),
        initial_cash=1_000_000.0,
        bus=bus,
        store=None,
        metrics=StrategyMetrics(CollectorRegistry()),
    )
    broker = executor(bus, store)
    feed_shutdown, strategy_shutdown, executor_shutdown = ShutdownEvent(), ShutdownEvent(), ShutdownEvent()
    tasks = [
        asyncio.create_task(feed.run(feed_shutdown)),
        asyncio.create_task(strategy.run(strategy_shutdown)),
        asyncio.create_task(broker.run(executor_shutdown)),
    ]

    def orders() -> list[dict[str, str]]:
        return [json.loads(record.value) for record in bus.read_all(ORDERS, timeout=30.0)]

    try:
        await until("orders before the restart", lambda: len(orders()) >= 10, within_s=90.0)
        await simulator.close()
        restarted_at = datetime.now(UTC)
        await simulator.start()
        await until(
            "orders after the restart",
            lambda: sum(datetime.fromisoformat(o["ts"]) > restarted_at for o in orders()) >= 10,
            within_s=90.0,
        )
        feed_shutdown.set()
        await simulator.close()
        made = orders()
        ticks = [json.loads(record.value) for record in bus.read_all(TICKS, timeout=30.0)]
        before = [int(t["seq"]) for t in ticks if datetime.fromisoformat(t["ts"]) < restarted_at]
        after = [int(t["seq"]) for t in ticks if datetime.fromisoformat(t["ts"]) > restarted_at]
        assert min(after) < max(before)  # the sequence started again, and the feed followed it
        # Every order has an id of its own ...
        repeated = {order_id: n for order_id, n in Counter(o["id"] for o in made).items() if n > 1}
        assert not repeated, f"{len(repeated)} order ids repeated after the sequence restarted"
        # ... and the executor answers each one: none is dropped as a duplicate.
        await until(
            "every order answered",
            lambda: {o["id"] for o in made} <= set(committed_fills(bus)),
            within_s=90.0,
        )
        fills = committed_fills(bus)
        assert {fills[o["id"]] for o in made} == {"filled"}
    finally:
        feed_shutdown.set()
        strategy_shutdown.set()
        executor_shutdown.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await simulator.close()
        await store.clear()
        await store.close()
        bus.close()
