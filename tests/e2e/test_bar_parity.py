"""A tick file replayed through simulator, feed, strategies and executor (separate processes, real Kafka
and Redis) with bar timeframes 1m and 5m gives exactly the trades `tradebot backtest --timeframe` gives on
the same file (signals on the bars' closes, stops on every tick), for two parameter sets with stops; the
strategies publish the bars the backtest aggregates; and `kill -9` of a bar strategy in the middle of its
bars loses and doubles nothing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.e2e.harness import Pipeline, backtest_trades, read_keyed, read_topic
from tests.plugins.servers import KafkaBroker
from tradebot.core.bars import aggregate, timeframe_ns

# Two parameter sets with stops: a stop-loss with a take-profit, and a trailing stop that also goes short.
SETS: dict[str, dict[str, Any]] = {
    "a": {
        "short_window": 3,
        "long_window": 8,
        "stop_loss_pct": 0.4,
        "take_profit_pct": 0.8,
        "sizing": "qty:10",
    },
    "b": {
        "ma_type": "ema",
        "short_window": 2,
        "long_window": 5,
        "trailing_stop_pct": 0.5,
        "allow_short": True,
        "sizing": "qty:10",
    },
}
FLAGS: dict[str, list[str]] = {
    "a": ["--short-window", "3", "--long-window", "8", "--stop-loss-pct", "0.4", "--take-profit-pct", "0.8"],
    "b": [
        "--ma",
        "ema",
        "--short-window",
        "2",
        "--long-window",
        "5",
        "--trailing-stop-pct",
        "0.5",
        "--allow-short",
    ],
}
Trip = tuple[str, float, float, float]


def tick_file(path: Path, n: int = 12_000, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Ticks about 0.9 s apart on a random walk (about three hours: 180 1m bars, 36 5m bars)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-05-01T00:00:00Z").value
    ts = start + np.cumsum(rng.exponential(0.9, n) * 10**9).astype(np.int64)
    price = np.round(100.0 * np.exp(np.cumsum(rng.normal(0, 0.0008, n))), 2)
    stamps = pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path.write_text(
        "timestamp,price,size\n"
        + "".join(f"{t},{p!r},1\n" for t, p in zip(stamps, price.tolist(), strict=True))
    )
    return ts, price


def expected_live(path: Path, name: str, timeframe: str) -> tuple[list[Trip], int]:
    """The backtest's round trips the live strategy makes too, and the fills it makes. The backtest closes
    the last bar at the end of the data; live, that bar is still being built (no later tick closed it), so
    an order decided at its close is the backtest's only."""
    _, result = backtest_trades(["--timeframe", timeframe, "--sizing", "qty:10"], data=path, base=FLAGS[name])
    n_bars = int(result["stats"]["bars"])
    trips: list[Trip] = []
    fills = 0
    for trade in result["trades"]:
        if trade["entry_bar"] == n_bars - 1:
            continue  # entered at the last bar's close
        fills += 1
        exit_at_last_close = (
            trade["exit_reason"] in ("exit_cross", "end_of_data") and trade["exit_bar"] == n_bars - 1
        )
        if not exit_at_last_close:
            fills += 1
            trips.append((trade["side"], trade["qty"], trade["entry_price"], trade["exit_price"]))
    return trips, fills


def live_trips(fills: list[dict[str, Any]]) -> list[Trip]:
    trips: list[Trip] = []
    opened: dict[str, Any] | None = None
    for record in fills:
        fill = record["fill"]
        assert fill["status"] == "filled"
        if opened is None:
            opened = fill
        else:
            side = "long" if opened["side"] == "buy" else "short"
            trips.append((side, opened["qty"], opened["price"], fill["price"]))
            opened = None
    return trips


def fills_of(pipeline: Pipeline[KafkaBroker], strategy_id: str) -> list[dict[str, Any]]:
    return [
        f for f in read_topic(pipeline.kafka.bootstrap, "fills") if f["order"]["strategy_id"] == strategy_id
    ]


async def redis_bars(pipeline: Pipeline[KafkaBroker], timeframe: str) -> list[dict[str, Any]]:
    from tradebot.adapters.redis_store import RedisStore
    from tradebot.adapters.store import Query

    store = RedisStore(pipeline.redis.url)
    try:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await store.bars(
                timeframe, Query(symbol="GOOG", limit=1000, cursor=cursor, newest_first=False)
            )
            items += page.items
            cursor = page.next_cursor
            if cursor is None:
                return items
    finally:
        await store.close()


def add_strategy(pipeline: Pipeline[KafkaBroker], strategy_id: str, name: str, timeframe: str) -> None:
    pipeline.add(
        f"strategy-{strategy_id}",
        ["strategy"],
        TRADEBOT_STRATEGY_ID=strategy_id,
        TRADEBOT_STRATEGY_SYMBOLS="GOOG",
        TRADEBOT_STRATEGY_PARAMS=json.dumps({**SETS[name], "timeframe": timeframe}),
    ).start()


def test_bar_strategies_replayed_live_trade_as_the_backtest(
    pipeline: Pipeline[KafkaBroker], tmp_path: Path
) -> None:
    path = tmp_path / "ticks.csv"
    ts, price = tick_file(path)
    runs = {"a1m": ("a", "1m"), "b5m": ("b", "5m"), "a5m": ("a", "5m"), "b1m": ("b", "1m")}
    expected = {sid: expected_live(path, name, tf) for sid, (name, tf) in runs.items()}
    assert all(len(trips) >= 2 for trips, _ in expected.values()), expected
    for sid, (name, tf) in list(runs.items())[1:]:
        add_strategy(pipeline, sid, name, tf)
    pipeline.start_replay(strategy_id="a1m", params={**SETS["a"], "timeframe": "1m"}, data=path)
    total = sum(n for _, n in expected.values())
    pipeline.wait_until(
        f"{total} fills",
        lambda: sum(len(fills_of(pipeline, sid)) for sid in runs) >= total,
        timeout=240,
    )
    time.sleep(2)  # anything extra would show up now
    for sid, (trips, n_fills) in expected.items():
        fills = fills_of(pipeline, sid)
        assert len(fills) == n_fills, sid
        assert live_trips(fills) == trips, sid
    orders = read_topic(pipeline.kafka.bootstrap, "orders")
    assert len({o["id"] for o in orders}) == len(orders) == total
    # Each timeframe's strategies published every closed bar (all but the last, still open), keyed by symbol.
    bars = read_keyed(pipeline.kafka.bootstrap, "bars")
    for tf in ("1m", "5m"):
        want = aggregate(ts, price, price, price, price, np.ones(len(ts)), timeframe_ns(tf))
        for sid in (s for s, (_, t) in runs.items() if t == tf):
            mine = [v for k, v in bars if v["source"] == sid]
            assert {k for k, v in bars if v["source"] == sid} == {"GOOG"}
            assert [b["close"] for b in mine] == want.close[:-1].tolist()
            assert [pd.Timestamp(b["ts"]).value for b in mine] == want.ts[:-1].tolist()
        # The executor projects them into Redis for the API: one per open time, whoever published it.
        pipeline.wait_until(
            f"{tf} bars in Redis",
            lambda: len(asyncio.run(redis_bars(pipeline, tf))) >= len(want.ts) - 1,  # noqa: B023
        )
        stored = asyncio.run(redis_bars(pipeline, tf))
        assert [pd.Timestamp(b["ts"]).value for b in stored] == want.ts[:-1].tolist()
        assert [b["close"] for b in stored] == want.close[:-1].tolist()


def test_kill_9_of_a_bar_strategy_mid_bar_loses_and_doubles_nothing(
    pipeline: Pipeline[KafkaBroker], tmp_path: Path
) -> None:
    path = tmp_path / "ticks.csv"
    tick_file(path)
    trips, n_fills = expected_live(path, "a", "1m")
    # About 3 hours of ticks in about 20 s: each kill lands inside some bar.
    pipeline.start_replay(speed="540", strategy_id="bars", params={**SETS["a"], "timeframe": "1m"}, data=path)
    strategy = pipeline.services["strategy-bars"]
    pipeline.wait_until("first fills", lambda: len(fills_of(pipeline, "bars")) > 0, timeout=60)
    rng = random.Random(20261206)
    for _ in range(4):
        time.sleep(rng.uniform(0.5, 2.5))
        strategy.kill()
        strategy.start()
    pipeline.wait_until(f"{n_fills} fills", lambda: len(fills_of(pipeline, "bars")) >= n_fills, timeout=180)
    time.sleep(2)
    fills = fills_of(pipeline, "bars")
    orders = [o for o in read_topic(pipeline.kafka.bootstrap, "orders") if o["strategy_id"] == "bars"]
    duplicated = [oid for oid, n in Counter(o["id"] for o in orders).items() if n > 1]
    assert not duplicated
    assert len(fills) == len(orders) == n_fills
    assert live_trips(fills) == trips
    # Every bar published once, in order, across the restarts.
    starts = [pd.Timestamp(v["ts"]).value for _, v in read_keyed(pipeline.kafka.bootstrap, "bars")]
    assert starts == sorted(set(starts))
