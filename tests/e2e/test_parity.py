"""A CSV replayed through simulator, feed, strategy and executor (separate processes, real Kafka and
Redis) gives exactly the trades `tradebot backtest --fill close` gives on the same file."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.e2e.harness import Pipeline, backtest_trades, read_topic, trades_from_fills
from tests.plugins.servers import KafkaBroker

# A second strategy on the same ticks, with other rules: EMA, trailing stop, take-profit, fixed notional.
OTHER = {
    "ma_type": "ema",
    "short_window": 8,
    "long_window": 21,
    "trailing_stop_pct": 4.0,
    "take_profit_pct": 15.0,
    "sizing": "notional:5000",
    "qty_step": 0.001,
}
OTHER_FLAGS = [
    "--ma",
    "ema",
    "--short-window",
    "8",
    "--long-window",
    "21",
    "--trailing-stop-pct",
    "4",
    "--take-profit-pct",
    "15",
    "--sizing",
    "notional:5000",
    "--qty-step",
    "0.001",
]


def redis_fill_count(pipeline: Pipeline[Any]) -> int:
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


def test_live_replay_gives_the_backtest_trades(pipeline: Pipeline[KafkaBroker]) -> None:
    expected, result = backtest_trades()
    open_at_end = any(t["exit_reason"] == "end_of_data" for t in result["trades"])
    expected_fills = 2 * len(expected) + (1 if open_at_end else 0)
    assert len(expected) > 20

    other_expected, other_result = backtest_trades(base=OTHER_FLAGS)
    other_fills = 2 * len(other_expected) + int(other_result["trades"][-1]["exit_reason"] == "end_of_data")
    assert other_expected != expected

    pipeline.add(
        "strategy-other",
        ["strategy"],
        TRADEBOT_STRATEGY_ID="other",
        TRADEBOT_STRATEGY_SYMBOLS="GOOG",
        TRADEBOT_STRATEGY_PARAMS=json.dumps(OTHER),
    ).start()
    pipeline.start_replay()
    total = expected_fills + other_fills
    pipeline.wait_until(f"{total} fills in Redis", lambda: redis_fill_count(pipeline) >= total, timeout=120)
    everything = read_topic(pipeline.kafka.bootstrap, "fills")
    fills = [f for f in everything if f["order"]["strategy_id"] == "parity"]
    assert [f["fill"]["status"] for f in fills] == ["filled"] * expected_fills
    assert trades_from_fills(fills) == expected
    assert (
        trades_from_fills([f for f in everything if f["order"]["strategy_id"] == "other"]) == other_expected
    )
    orders = read_topic(pipeline.kafka.bootstrap, "orders")
    assert len({o["id"] for o in orders}) == len(orders) == total
    # The feed published every bar once, in order.
    ticks = read_topic(pipeline.kafka.bootstrap, "ticks")
    assert [t["seq"] for t in ticks] == list(range(1, 2149))
