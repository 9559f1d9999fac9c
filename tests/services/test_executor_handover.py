"""Two executors overlapping as in a rolling update (issue 13.1), on real Kafka and Redis and in memory.

The new executor fences the old one before it rebuilds its book from `fills`: whatever the old one
commits up to the fence is in the rebuilt book, and what it tries after fails. The test puts an entry
in the old executor's hands in the worst moment, right after the new one has read `fills`: rebuilding
before fencing, the old one commits that fill unseen by the new book, which then refuses the exit as
`no_position`. Fencing first, the old one's commit is refused and the new one fills both.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.adapters._wrapped_bus import WrappedBus
from tests.plugins._proc import free_port
from tests.plugins.servers import KafkaBroker, RedisServer
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import Bus, Record
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.store import Query, Store
from tradebot.adapters.topics import FILLS, ORDERS, pipeline_topics
from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason, OrderRequest, Side, order_id
from tradebot.executor.broker import PaperBroker, RiskChecks
from tradebot.executor.runner import ExecutorMetrics, ExecutorRunner
from tradebot.kit.lifecycle import ShutdownEvent


class HookAfterFillsRead(WrappedBus):
    """A bus that calls `hook` once, right after the first full read of `fills` (the book's rebuild)."""

    def __init__(self, inner: Bus, hook: Callable[[], None]) -> None:
        super().__init__(inner)
        self.hook: Callable[[], None] | None = hook

    def read_all(self, topic: str, *, read_committed: bool = True, timeout: float = 10.0) -> list[Record]:
        records = super().read_all(topic, read_committed=read_committed, timeout=timeout)
        if topic == FILLS:
            self._after_fills_read()
        return records

    def scan(
        self, topic: str, *, last: int | None = None, read_committed: bool = True, timeout: float = 10.0
    ) -> Iterator[list[Record]]:
        yield from super().scan(topic, last=last, read_committed=read_committed, timeout=timeout)
        if topic == FILLS:
            self._after_fills_read()

    def _after_fills_read(self) -> None:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()


@dataclass
class Backends:
    make_bus: Callable[[], Bus]
    store: Store


@pytest.fixture(params=["memory", "kafka"])
def backends(request: pytest.FixtureRequest) -> Iterator[Backends]:
    if request.param == "memory":
        shared = MemoryBus()
        yield Backends(lambda: shared, MemoryStore())
        return
    # A broker of its own: the executor's topics have fixed names.
    bootstrap = request.getfixturevalue("own_kafka").bootstrap
    redis_url = request.getfixturevalue("redis_server").url
    yield Backends(
        lambda: KafkaBus(bootstrap), RedisStore(redis_url, prefix=f"handover-{uuid.uuid4().hex[:8]}")
    )


def make_order(symbol: str, side: Side, reason: OrderReason, n: int) -> OrderRequest:
    return OrderRequest(
        id=order_id("s1", symbol, f"tick:{symbol}:{n}"),
        strategy_id="s1",
        symbol=symbol,
        side=side,
        qty=10.0,
        reason=reason,
        ref_price=100.0,
        ts=datetime(2024, 1, 2, tzinfo=UTC),
        cause=f"tick:{symbol}:{n}",
    )


def executor(bus: Bus, store: Store) -> ExecutorRunner:
    return ExecutorRunner(
        bus=bus,
        store=store,
        broker=PaperBroker(Costs(), RiskChecks()),
        metrics=ExecutorMetrics(CollectorRegistry()),
        poll_timeout_s=0.05,
    )


def committed_fills(bus: Bus) -> dict[str, str]:
    """Order id -> fill status, as the `fills` topic says."""
    return {
        value["order"]["id"]: value["fill"]["status"]
        for value in (json.loads(record.value) for record in bus.read_all(FILLS, timeout=30.0))
    }


async def test_the_new_executor_fences_the_old_one_before_it_rebuilds(backends: Backends) -> None:
    bus = backends.make_bus()
    bus.ensure_topics(pipeline_topics(1))
    sender = bus.producer("test-strategy")

    def send(*orders: OrderRequest) -> None:
        for made in orders:
            sender.produce(ORDERS, made.model_dump_json().encode(), key=made.symbol.encode())
        sender.flush()

    entry_a = make_order("AAA", Side.BUY, OrderReason.ENTRY_LONG, 1)
    entry_b = make_order("BBB", Side.BUY, OrderReason.ENTRY_LONG, 2)
    exits = [
        make_order("AAA", Side.SELL, OrderReason.EXIT_CROSS, 3),
        make_order("BBB", Side.SELL, OrderReason.EXIT_CROSS, 4),
    ]
    old, old_shutdown = executor(bus, backends.store), ShutdownEvent()
    old_task = asyncio.create_task(old.run(old_shutdown))
    new_shutdown = ShutdownEvent()
    new_task: asyncio.Task[None] | None = None
    try:
        send(entry_a)
        await until(
            "the old executor fills the first entry",
            lambda: entry_a.id in committed_fills(bus),
            within_s=60.0,
        )

        def old_executor_handles_an_entry() -> None:
            """In the new executor's start-up, right after it read `fills`: the old one gets an entry and
            either commits its fill or finds itself fenced."""
            send(entry_b)
            deadline = time.monotonic() + 60.0
            while not (old_shutdown.is_set() or entry_b.id in committed_fills(bus)):
                assert time.monotonic() < deadline, "the old executor neither filled nor stopped"
                time.sleep(0.05)

        new = executor(HookAfterFillsRead(backends.make_bus(), old_executor_handles_an_entry), backends.store)
        new_task = asyncio.create_task(new.run(new_shutdown))
        await until("the new executor is consuming", lambda: new.ready, within_s=60.0)
        send(*exits)
        await until("four fills", lambda: len(committed_fills(bus)) == 4, within_s=60.0)
        fills = committed_fills(bus)
        # Nothing the old executor's fills allow is refused: both exits close a position it opened.
        assert fills == {made.id: "filled" for made in (entry_a, entry_b, *exits)}
        await asyncio.wait_for(asyncio.shield(old_task), 30.0)
        assert old_shutdown.reason == "fenced"

        async def projected() -> dict[str, str]:
            page = await backends.store.fills(Query(limit=100))
            return {item["order_id"]: item["status"] for item in page.items}

        deadline = time.monotonic() + 30.0
        while await projected() != fills:
            assert time.monotonic() < deadline, f"the store {await projected()} != the topic {fills}"
            await asyncio.sleep(0.1)
    finally:
        old_shutdown.set()
        new_shutdown.set()
        await asyncio.gather(old_task, *([new_task] if new_task else []), return_exceptions=True)
        sender.close()
        await backends.store.clear()
        await backends.store.close()


def executor_process(bootstrap: str, redis_url: str, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TRADEBOT_KAFKA_BOOTSTRAP": bootstrap,
        "TRADEBOT_REDIS_URL": redis_url,
        "TRADEBOT_REDIS_PREFIX": prefix,
        "TRADEBOT_TOPIC_PARTITIONS": "2",
        "TRADEBOT_HTTP_HOST": "127.0.0.1",
        "TRADEBOT_HTTP_PORT": str(free_port()),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tradebot.cli", "executor"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def test_a_second_executor_process_fences_the_first(
    own_kafka: KafkaBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    """issue 13.2: two executor processes share the transactional id `executor`: the second fences the
    first, which stops at its next transaction rather than both writing fills."""
    bus = KafkaBus(own_kafka.bootstrap)
    bus.ensure_topics(pipeline_topics(2))
    sender = bus.producer("test-strategy")
    prefix = f"two-processes-{uuid.uuid4().hex[:8]}"
    # Symbols over both partitions of `orders`, so each process is assigned some once both are in the group.
    entries = [make_order(f"S{n:02d}", Side.BUY, OrderReason.ENTRY_LONG, n) for n in range(12)]

    def send(orders: list[OrderRequest]) -> None:
        for made in orders:
            sender.produce(ORDERS, made.model_dump_json().encode(), key=made.symbol.encode())
        sender.flush()

    first = executor_process(own_kafka.bootstrap, redis_server.url, prefix, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        send(entries[:1])
        await until("the first executor fills", lambda: entries[0].id in committed_fills(bus), within_s=90.0)
        second = executor_process(own_kafka.bootstrap, redis_server.url, prefix, tmp_path / "second.log")
        # The second fences the first when it starts; keep orders coming until the first notices.
        deadline = time.monotonic() + 90.0
        while first.poll() is None:
            assert time.monotonic() < deadline, "the fenced executor kept running"
            send(entries[1:])
            await asyncio.sleep(1.0)
        await until(
            "every entry filled", lambda: set(committed_fills(bus)) == {e.id for e in entries}, within_s=90.0
        )
        assert second.poll() is None, (tmp_path / "second.log").read_text()
        assert "another instance took over" in (tmp_path / "first.log").read_text()
        # Exactly one fill per order, every one filled (re-sent orders are duplicates of filled ones).
        ids = [json.loads(record.value)["order"]["id"] for record in bus.read_all(FILLS, timeout=30.0)]
        assert sorted(ids) == sorted(e.id for e in entries)
        assert set(committed_fills(bus).values()) == {"filled"}
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30.0)
        sender.close()
        bus.close()
