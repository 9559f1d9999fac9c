"""A CSV replayed through simulator, feed, strategy and executor (separate processes, real Kafka and
Redis) gives exactly the trades `tradebot backtest --fill close` gives on the same file."""

from __future__ import annotations

import asyncio

from tests.e2e.harness import Pipeline, backtest_trades, read_topic, trades_from_fills


def redis_fill_count(pipeline: Pipeline) -> int:
    from tradebot.adapters.redis_store import RedisStore
    from tradebot.adapters.store import Query

    async def count() -> int:
        store = RedisStore(pipeline.redis.url)
        try:
            total, cursor = 0, None
            while True:
                page = await store.fills(Query(limit=1000, cursor=cursor))
                total += len(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    return total
        finally:
            await store.close()

    return asyncio.run(count())


def test_live_replay_gives_the_backtest_trades(pipeline: Pipeline) -> None:
    expected, result = backtest_trades()
    open_at_end = any(t["exit_reason"] == "end_of_data" for t in result["trades"])
    expected_fills = 2 * len(expected) + (1 if open_at_end else 0)
    assert len(expected) > 20

    pipeline.start_replay()
    pipeline.wait_until(
        f"{expected_fills} fills in Redis", lambda: redis_fill_count(pipeline) >= expected_fills, timeout=120
    )
    fills = read_topic(pipeline.kafka.bootstrap, "fills")
    assert [f["fill"]["status"] for f in fills] == ["filled"] * expected_fills
    assert trades_from_fills(fills) == expected
    orders = read_topic(pipeline.kafka.bootstrap, "orders")
    assert len({o["id"] for o in orders}) == len(orders) == expected_fills
    # The feed published every bar once, in order.
    ticks = read_topic(pipeline.kafka.bootstrap, "ticks")
    assert [t["seq"] for t in ticks] == list(range(1, 2149))
