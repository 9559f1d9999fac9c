"""Redis stays bounded (issue 13.7), on a real Redis: the order log and fills are trimmed to a retention and
the applied ids with them, during a long run and during a rebuild after a flush, while a fill is still applied
exactly once. Before, both streams and the applied-id set grew by every fill (about 800 bytes each)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from tests.plugins.servers import RedisServer
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.store import Query
from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason, OrderRequest, Side, order_id
from tradebot.executor.broker import PaperBroker

RETENTION = 1000
FILLS = 20_000
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def orders(count: int) -> list[OrderRequest]:
    made = []
    for i in range(count):
        entry = i % 2 == 0
        made.append(
            OrderRequest(
                id=order_id("s1", "AAA", f"tick:AAA:{i}"),
                strategy_id="s1",
                symbol="AAA",
                side=Side.BUY if entry else Side.SELL,
                qty=1.0,
                reason=OrderReason.ENTRY_LONG if entry else OrderReason.EXIT_CROSS,
                ref_price=100.0 + i % 7,
                ts=T0 + timedelta(seconds=i),
                cause=f"tick:AAA:{i}",
            )
        )
    return made


async def apply_all(store: RedisStore, made: list[OrderRequest]) -> None:
    broker = PaperBroker(Costs())
    for offset, order in enumerate(made):
        record = broker.execute(order, now=order.ts, halted=False, last_price=None)
        assert record is not None
        await store.apply_fill(record.order, record.fill, record.position, offset)


async def sizes(admin: aioredis.Redis, prefix: str) -> dict[str, int]:
    keys = (f"{prefix}:orders", f"{prefix}:fills", f"{prefix}:applied_ids")
    used = [int(await admin.memory_usage(key) or 0) for key in keys]
    return {
        "orders": int(await admin.xlen(keys[0])),
        "fills": int(await admin.xlen(keys[1])),
        "applied": int(await admin.zcard(keys[2])),
        "bytes": sum(used),
    }


async def test_a_long_run_and_a_rebuild_after_a_flush_stay_within_the_retention(
    redis_server: RedisServer,
) -> None:
    prefix = f"retention-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_server.url, prefix=prefix, stream_maxlen=RETENTION)
    admin = aioredis.Redis.from_url(redis_server.url)
    made = orders(FILLS)
    try:
        await apply_all(store, made)
        run = await sizes(admin, prefix)
        # Approximate trimming removes whole stream nodes (100 entries each by default): a little above.
        for name in ("orders", "fills", "applied"):
            assert RETENTION <= run[name] <= RETENTION + 200, (name, run)
        assert await store.applied_offset() == FILLS - 1
        # The newest fills are the ones kept, newest first, none twice.
        page = await store.fills(Query(limit=RETENTION))
        assert [item["order_id"] for item in page.items[:3]] == [o.id for o in made[-1:-4:-1]]
        # Still exactly once: a fill older than the applied ids, seen again, is refused by its offset.
        broker = PaperBroker(Costs())
        again = broker.execute(made[5], now=made[5].ts, halted=False, last_price=None)
        assert again is not None
        assert not await store.apply_fill(again.order, again.fill, again.position, 5)

        # A rebuild after a flush (the executor re-applies the whole `fills` topic) is bounded too.
        await store.clear()
        await apply_all(store, made)
        rebuilt = await sizes(admin, prefix)
        for name in ("orders", "fills", "applied"):
            assert RETENTION <= rebuilt[name] <= RETENTION + 200, (name, rebuilt)
        assert rebuilt["bytes"] < 2 * run["bytes"] + 100_000
        print(f"\nretention {RETENTION}, {FILLS} fills: {run} after the run, {rebuilt} after the rebuild")
    finally:
        await store.clear()
        await admin.aclose()
        await store.close()
