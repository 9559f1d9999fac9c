"""`kill -9` of the strategy and of the executor at random moments during a replay, each restarted:
the committed orders and fills are exactly those of an uninterrupted run; nothing lost or duplicated.
Also: a Kafka broker restart, a Redis restart (it loses everything) and a simulator restart mid-replay.
"""

from __future__ import annotations

import random
import time
from collections import Counter

from tests.e2e.harness import Pipeline, backtest_trades, read_topic, trades_from_fills
from tests.e2e.test_parity import redis_fill_count
from tests.plugins.servers import KafkaBroker

# The sample spans ~3,100 days; this speed replays it in about 15 s.
SPEED = str(18_000_000)


def expected_run() -> tuple[list[tuple[str, str, str, float, float, float]], int]:
    expected, result = backtest_trades()
    open_at_end = any(t["exit_reason"] == "end_of_data" for t in result["trades"])
    return expected, 2 * len(expected) + (1 if open_at_end else 0)


def assert_exactly_once(
    pipeline: Pipeline[KafkaBroker], expected: list[tuple[str, str, str, float, float, float]], n_fills: int
) -> None:
    orders = read_topic(pipeline.kafka.bootstrap, "orders")
    fills = read_topic(pipeline.kafka.bootstrap, "fills")
    duplicated = [oid for oid, n in Counter(o["id"] for o in orders).items() if n > 1]
    assert not duplicated, f"orders committed twice: {duplicated[:5]}"
    assert len(orders) == n_fills
    assert Counter(f["order"]["id"] for f in fills) == Counter(o["id"] for o in orders)
    assert all(f["fill"]["status"] == "filled" for f in fills)
    assert trades_from_fills(fills) == expected


def test_kill_9_strategy_and_executor(pipeline: Pipeline[KafkaBroker]) -> None:
    expected, n_fills = expected_run()
    pipeline.start_replay(speed=SPEED)
    rng = random.Random(20261125)
    strategy = pipeline.services["strategy-parity"]
    executor = pipeline.services["executor"]
    pipeline.wait_until("first fills", lambda: redis_fill_count(pipeline) > 0, timeout=60)
    for victim in (strategy, executor, strategy, executor, strategy):
        time.sleep(rng.uniform(0.5, 2.5))
        victim.kill()
        victim.start()
    pipeline.wait_until(f"{n_fills} fills", lambda: redis_fill_count(pipeline) >= n_fills, timeout=180)
    time.sleep(2)  # anything extra (a duplicate) would show up now
    assert redis_fill_count(pipeline) == n_fills
    assert_exactly_once(pipeline, expected, n_fills)


def test_broker_redis_and_simulator_restarts(pipeline: Pipeline[KafkaBroker]) -> None:
    expected, n_fills = expected_run()
    pipeline.start_replay(speed=SPEED)
    pipeline.wait_until("first fills", lambda: redis_fill_count(pipeline) > 0, timeout=60)
    time.sleep(1.5)
    pipeline.kafka.restart()  # clean broker stop and start on the same port and data
    time.sleep(1.5)
    pipeline.redis.restart()  # Redis comes back empty (no persistence): the executor rebuilds it
    time.sleep(1.0)
    simulator = pipeline.services["simulator"]
    simulator.kill()
    time.sleep(1.0)
    simulator.start()  # the feed reconnects and resumes after its last sequence number
    pipeline.wait_until(f"{n_fills} fills", lambda: redis_fill_count(pipeline) >= n_fills, timeout=240)
    time.sleep(2)
    assert redis_fill_count(pipeline) == n_fills
    assert_exactly_once(pipeline, expected, n_fills)
    ticks = read_topic(pipeline.kafka.bootstrap, "ticks")
    assert [t["seq"] for t in ticks] == list(range(1, 2149))
