"""Force-exit and close-all (issue 16.3), on real Kafka and Redis: the API records the command on
`strategy-commands`, the strategy sends the exit (reason `force_exit`) and assumes it filled, the executor
fills it; a repeated request (same command id), even across a strategy restart, makes no second order and
no second fill, and the strategy does not exit the closed position again."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.plugins.servers import KafkaBroker, RedisServer
from tests.services.test_executor_handover import executor
from tests.services.test_executor_metrics import until
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.topics import FILLS, ORDERS, TICKS, pipeline_topics
from tradebot.api.app import ApiSettings, create_api
from tradebot.core.costs import Costs
from tradebot.core.models import Tick
from tradebot.core.params import StrategyParams
from tradebot.executor.runner import ExecutorRunner
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.strategy.runner import StrategyMetrics, StrategyRunner

TOKEN = "force-exit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A 1% stop-loss: were the strategy to think it still held after the force-exit, the falling prices
# sent afterwards would make it send a stop-loss exit.
PARAMS = StrategyParams(short_window=2, long_window=3, sizing="qty:10", stop_loss_pct=1.0)
T0 = datetime(2024, 1, 2, tzinfo=UTC)


@dataclass
class Running:
    bus: KafkaBus
    store: RedisStore
    api: httpx.AsyncClient
    executor: ExecutorRunner
    executor_task: asyncio.Task[None]
    executor_stop: ShutdownEvent
    strategy: StrategyRunner = field(init=False)
    strategy_task: asyncio.Task[None] = field(init=False)
    strategy_stop: ShutdownEvent = field(init=False)
    seq: int = 0

    async def ticks(self, symbol: str, prices: list[float]) -> None:
        """What the feed does: each tick on `ticks`, and into the store's prices."""
        producer = self.bus.producer("test-feed")
        for price in prices:
            self.seq += 1
            tick = Tick(symbol=symbol, price=price, ts=T0 + timedelta(minutes=self.seq), seq=self.seq)
            producer.produce(TICKS, tick.model_dump_json().encode(), key=symbol.encode())
            await self.store.append_price(symbol, price, tick.ts)
            await self.store.set_last_price(symbol, price, tick.ts)
        producer.flush()
        producer.close()

    def start_strategy(self) -> None:
        self.strategy = StrategyRunner(
            strategy_id="fx",
            symbols=["AAA", "BBB"],
            params=PARAMS,
            costs=Costs(),
            initial_cash=100_000.0,
            bus=self.bus,
            store=self.store,
            metrics=StrategyMetrics(CollectorRegistry()),
            poll_timeout_s=0.05,
        )
        self.strategy_stop = ShutdownEvent()
        self.strategy_task = asyncio.create_task(self.strategy.run(self.strategy_stop))

    async def stop_strategy(self) -> None:
        self.strategy_stop.set()
        await self.strategy_task


def topic(bus: KafkaBus, name: str) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in bus.read_all(name, read_committed=True, timeout=30.0)]


def force_exits(bus: KafkaBus) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(force-exit orders on `orders`, their fills on `fills`)."""
    orders = [o for o in topic(bus, ORDERS) if o["reason"] == "force_exit"]
    fills = [f for f in topic(bus, FILLS) if f["order"]["reason"] == "force_exit"]
    return orders, fills


@pytest.fixture
async def running(own_kafka: KafkaBroker, redis_server: RedisServer) -> AsyncIterator[Running]:
    bus = KafkaBus(own_kafka.bootstrap)
    await asyncio.to_thread(bus.ensure_topics, pipeline_topics(1))
    prefix = f"fx-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_server.url, prefix=prefix)
    app = create_api(
        ApiSettings(redis_url=redis_server.url, redis_prefix=prefix, api_token=TOKEN),
        RedisStore(redis_server.url, prefix=prefix),
        bus=bus,
    )
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    broker, broker_stop = executor(bus, store), ShutdownEvent()
    run = Running(bus, store, api, broker, asyncio.create_task(broker.run(broker_stop)), broker_stop)
    run.start_strategy()
    try:
        yield run
    finally:
        await run.stop_strategy()
        broker_stop.set()
        await run.executor_task
        await api.aclose()
        await store.close()
        app.state.control_producer.close()
        bus.close()


async def position(run: Running, symbol: str) -> float:
    held = await run.store.position("fx", symbol)
    return 0.0 if held is None else held.qty


async def wait_position(run: Running, symbol: str, qty: float, within_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while await position(run, symbol) != qty:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{symbol}: position {await position(run, symbol)}, not {qty}")
        await asyncio.sleep(0.1)


async def test_a_repeated_force_exit_makes_one_order_and_one_fill(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradebot.executor.runner")
    run = running
    # Falling then rising: the short average crosses above the long one, an entry of 10.
    await run.ticks("AAA", [100.0, 99.0, 98.0, 97.0, 104.0, 106.0])
    await wait_position(run, "AAA", 10.0)

    assert (await run.api.post("/strategies/fx/positions/AAA/exit")).status_code == 401
    assert (
        await run.api.post("/strategies/fx/positions/AAA/exit", headers={"Authorization": "Bearer x"})
    ).status_code == 403
    assert (await run.api.post("/strategies/nope/positions/AAA/exit", headers=AUTH)).status_code == 404
    assert (await run.api.post("/strategies/fx/positions/ZZZ/exit", headers=AUTH)).status_code == 404

    first = await run.api.post("/strategies/fx/positions/AAA/exit?command_id=retry-1", headers=AUTH)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["command_id"] == "retry-1"
    assert [o["symbol"] for o in body["orders"]] == ["AAA"]
    # The client's retry, before and after the exit filled.
    assert (
        await run.api.post("/strategies/fx/positions/AAA/exit?command_id=retry-1", headers=AUTH)
    ).status_code == 200
    await wait_position(run, "AAA", 0.0)
    await until("the strategy's book is flat", lambda: run.strategy.position_of("AAA") == 0.0, 30.0)
    assert (
        await run.api.post("/strategies/fx/positions/AAA/exit?command_id=retry-1", headers=AUTH)
    ).status_code == 200

    # A restarted strategy (its state from Kafka) reads the same command again: still flat, no order.
    await run.stop_strategy()
    run.start_strategy()
    assert (
        await run.api.post("/strategies/fx/positions/AAA/exit?command_id=retry-1", headers=AUTH)
    ).status_code == 200
    # Prices that would hit the 1% stop of the closed position: no stop-loss exit follows.
    await run.ticks("AAA", [95.0, 90.0])
    await until(
        "the restarted strategy read the new ticks",
        lambda: run.strategy.strategy.book.holding("AAA").last_price == 90.0,
        60.0,
    )
    await asyncio.sleep(1.0)

    orders, fills = force_exits(run.bus)
    assert [o["id"] for o in orders] == [body["orders"][0]["order_id"]]
    assert len(fills) == 1
    assert fills[0]["fill"]["status"] == "filled"
    assert fills[0]["fill"]["qty"] == 10.0
    assert [o["reason"] for o in topic(run.bus, ORDERS) if o["symbol"] == "AAA"] == [
        "entry_long",
        "force_exit",
    ]
    assert run.strategy.position_of("AAA") == 0.0
    assert await position(run, "AAA") == 0.0

    # The trade is closed (reason force_exit) and no longer open; the summary counts it.
    listed = (await run.api.get("/trades?strategy=fx")).json()
    assert listed["open"] == []
    assert [(t["symbol"], t["exit_reason"], t["qty"]) for t in listed["closed"]] == [
        ("AAA", "force_exit", 10.0)
    ]
    summary = (await run.api.get("/summary")).json()
    assert summary["items"][0]["trades"] == 1
    assert summary["total"]["realized_pnl"] == pytest.approx(listed["closed"][0]["pnl"])
    curve = (await run.api.get("/equity/marked?strategy=fx")).json()["points"]
    assert curve[-1]["equity"] == pytest.approx(summary["items"][0]["equity"])

    # The event log: the entry, the force-exit request (once per request) and the force-exit fill.
    events = (await run.api.get("/events?strategy=fx")).json()["items"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("force-exit") == 1
    assert kinds.count("entry") == 1
    assert kinds.count("force-exit-request") == 4
    # And one structured log line for the force-exit fill in the executor's log.
    lines = [r for r in caplog.records if getattr(r, "event", None) == "force-exit"]
    assert [(r.name, getattr(r, "symbol", None), getattr(r, "qty", None)) for r in lines] == [
        ("tradebot.executor.runner", "AAA", 10.0)
    ]


async def test_close_all_exits_every_open_position_of_the_strategy(running: Running) -> None:
    run = running
    await run.ticks("AAA", [100.0, 99.0, 98.0, 97.0, 104.0, 106.0])
    await run.ticks("BBB", [50.0, 49.0, 48.0, 47.0, 52.0, 53.0])
    await wait_position(run, "AAA", 10.0)
    await wait_position(run, "BBB", 10.0)
    listed = (await run.api.get("/trades?strategy=fx")).json()
    assert [(t["symbol"], t["side"], t["qty"], t["stop_loss"]) for t in listed["open"]] == [
        ("AAA", "long", 10.0, pytest.approx(104.0 * 0.99)),
        ("BBB", "long", 10.0, pytest.approx(52.0 * 0.99)),
    ]
    answer = await run.api.post("/strategies/fx/close-all", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["symbol"] is None
    assert [o["symbol"] for o in answer.json()["orders"]] == ["AAA", "BBB"]
    await wait_position(run, "AAA", 0.0)
    await wait_position(run, "BBB", 0.0)
    orders, fills = force_exits(run.bus)
    assert sorted(o["symbol"] for o in orders) == ["AAA", "BBB"]
    assert sorted(o["id"] for o in orders) == sorted(o["order_id"] for o in answer.json()["orders"])
    assert len(fills) == 2


async def test_force_exit_without_kafka_is_refused_not_pretended() -> None:
    store = MemoryStore()
    await store.register_strategy("fx", {"symbols": ["AAA"]})
    app = create_api(ApiSettings(api_token=TOKEN), store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
        answer = await api.post("/strategies/fx/positions/AAA/exit", headers=AUTH)
        assert answer.status_code == 503
        assert "Kafka" in answer.json()["detail"]
        assert (
            await api.post("/strategies/fx/close-all?command_id=bad%20id", headers=AUTH)
        ).status_code == 422


async def test_a_retried_force_exit_after_re_entry_leaves_the_new_trade_and_a_new_one_closes_it(
    running: Running,
) -> None:
    """The retry of a force-exit that closed one trade, read after the strategy entered again: it made an
    exit of the new trade with the first exit's order id, which the executor dropped as a duplicate while
    the strategy assumed it filled (the strategy flat, the broker long). A handled command is now ignored,
    also after a restart, and a new command closes the new trade."""
    run = running
    await run.ticks("AAA", [100.0, 99.0, 98.0, 97.0, 104.0, 106.0])
    await wait_position(run, "AAA", 10.0)
    first = await run.api.post("/strategies/fx/positions/AAA/exit?command_id=once-1", headers=AUTH)
    assert first.status_code == 200, first.text
    await wait_position(run, "AAA", 0.0)
    (exit_order,), _ = force_exits(run.bus)
    # Stamped with the last tick's time (the price it exits at), as the strategy's other orders are.
    assert datetime.fromisoformat(exit_order["ts"]) == T0 + timedelta(minutes=6)

    # Down, then up again: a new entry of 10.
    await run.ticks("AAA", [100.0, 97.0, 95.0, 94.0, 99.0, 102.0])
    await wait_position(run, "AAA", 10.0)
    await until("the strategy holds the new trade", lambda: run.strategy.position_of("AAA") == 10.0, 30.0)

    # The first request's retry: the command was handled; the new trade stays open on both sides.
    retry = await run.api.post("/strategies/fx/positions/AAA/exit?command_id=once-1", headers=AUTH)
    assert retry.status_code == 200
    await run.stop_strategy()  # ... also for a strategy restarted from its snapshot
    run.start_strategy()
    await until(
        "the restarted strategy holds the trade", lambda: run.strategy.position_of("AAA") == 10.0, 60.0
    )
    await run.ticks("AAA", [102.5])  # a batch after the retry: the command has been read by then
    await until(
        "the restarted strategy read the tick",
        lambda: run.strategy.strategy.book.holding("AAA").last_price == 102.5,
        60.0,
    )
    await asyncio.sleep(1.0)
    assert run.strategy.position_of("AAA") == 10.0
    assert await position(run, "AAA") == 10.0
    orders, _ = force_exits(run.bus)
    assert len(orders) == 1

    # A new command closes the new trade, with an order id of its own.
    second = await run.api.post("/strategies/fx/positions/AAA/exit?command_id=once-2", headers=AUTH)
    assert second.status_code == 200, second.text
    await wait_position(run, "AAA", 0.0)
    await until("the strategy is flat", lambda: run.strategy.position_of("AAA") == 0.0, 30.0)
    orders, fills = force_exits(run.bus)
    assert len({o["id"] for o in orders}) == 2
    assert len(fills) == 2
    assert all(f["fill"]["status"] == "filled" for f in fills)
    assert [o["id"] for o in orders][-1] == second.json()["orders"][0]["order_id"]
