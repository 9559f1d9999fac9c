"""A halt fails closed (issue 13.6), on real Kafka and Redis: the API records it on `strategy-control`, the
executor takes it from there, so losing Redis (FLUSHALL, a restart without persistence) cannot lift it.

Before, the halt lived only in a Redis set the executor re-read every 0.25 s: after a FLUSHALL the strategy
counted as not halted and its next entry was filled.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import redis.asyncio as aioredis

from tests.plugins.servers import KafkaBroker, RedisServer
from tests.services.test_executor_handover import executor, make_order
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import Bus
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.topics import FILLS, ORDERS, pipeline_topics
from tradebot.api.app import ApiSettings, create_api
from tradebot.core.models import OrderReason, OrderRequest, Side
from tradebot.kit.lifecycle import ShutdownEvent

TOKEN = "halt-test-token"


def fill_of(bus: Bus, order: OrderRequest) -> dict[str, object] | None:
    for record in bus.read_all(FILLS, timeout=30.0):
        value = json.loads(record.value)
        if value["order"]["id"] == order.id:
            fill: dict[str, object] = value["fill"]
            return fill
    return None


async def test_a_halt_survives_a_redis_flush_and_an_executor_restart(
    own_kafka: KafkaBroker, redis_server: RedisServer
) -> None:
    bus = KafkaBus(own_kafka.bootstrap)
    await asyncio.to_thread(bus.ensure_topics, pipeline_topics(1))
    prefix = f"halt-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_server.url, prefix=prefix)
    await store.register_strategy("s1", {})
    settings = ApiSettings(redis_url=redis_server.url, redis_prefix=prefix, api_token=TOKEN)
    app = create_api(settings, RedisStore(redis_server.url, prefix=prefix), bus=bus)
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
    sender = bus.producer("test-strategy")

    def send(order: OrderRequest) -> None:
        sender.produce(ORDERS, order.model_dump_json().encode(), key=order.symbol.encode())
        sender.flush()

    runner, shutdown = executor(bus, store), ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        entry = make_order("AAA", Side.BUY, OrderReason.ENTRY_LONG, 1)
        send(entry)
        await until("the entry filled", lambda: (fill_of(bus, entry) or {}).get("status") == "filled", 60.0)
        answer = await api.post("/strategies/s1/halt", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.json() == {"id": "s1", "halted": True}
        await until("the executor halted s1", lambda: runner._halted.get("s1") is True, 30.0)

        await admin.flushall()
        await asyncio.sleep(1.0)  # four rounds of the executor's store watcher over the empty Redis
        second = make_order("BBB", Side.BUY, OrderReason.ENTRY_LONG, 2)
        send(second)
        await until("the second entry answered", lambda: fill_of(bus, second) is not None, 30.0)
        refused = fill_of(bus, second)
        assert refused is not None
        assert (refused["status"], refused["reject_code"]) == ("rejected", "halted")
        # The executor put the halt back into the flushed Redis for the API and the dashboard.
        await until("the halt projected to Redis", lambda: runner._halted.get("s1") is True, 5.0)
        for _ in range(40):
            if await store.is_halted("s1"):
                break
            await asyncio.sleep(0.1)
        assert await store.is_halted("s1")
        exit_a = make_order("AAA", Side.SELL, OrderReason.EXIT_CROSS, 3)
        send(exit_a)  # exits still fill while halted
        await until("the exit filled", lambda: (fill_of(bus, exit_a) or {}).get("status") == "filled", 30.0)

        # A new executor over a flushed Redis rebuilds the halt from Kafka, not from Redis.
        shutdown.set()
        await task
        await admin.flushall()
        runner, shutdown = executor(bus, store), ShutdownEvent()
        task = asyncio.create_task(runner.run(shutdown))
        third = make_order("CCC", Side.BUY, OrderReason.ENTRY_LONG, 4)
        send(third)
        await until("the third entry answered", lambda: fill_of(bus, third) is not None, 60.0)
        refused = fill_of(bus, third)
        assert refused is not None
        assert refused["reject_code"] == "halted"
    finally:
        shutdown.set()
        await task
        await api.aclose()
        await admin.aclose()
        await store.close()
        sender.close()
        app.state.control_producer.close()
        bus.close()
