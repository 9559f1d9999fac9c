"""The store contract, run against RedisStore (a real Redis) and MemoryStore alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.adapters.conftest import StoreFactory
from tests.plugins.servers import RedisServer
from tradebot.adapters.store import Query, Store, ViewLostError
from tradebot.core.cockpit import StrategyEvent
from tradebot.core.models import ClosedBar, Fill, OrderReason, OrderRequest, Position, Side, Signal, order_id

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
STRATEGIES = ("alpha", "beta")
SYMBOLS = ("AAPL", "MSFT", "BTC-USD")


def trade(
    i: int, strategy: str = "alpha", symbol: str = "AAPL", ts: datetime | None = None
) -> tuple[OrderRequest, Fill, Position]:
    ts = ts or T0 + timedelta(minutes=i)
    side = Side.BUY if i % 2 == 0 else Side.SELL
    order = OrderRequest(
        id=order_id(strategy, symbol, f"tick:{symbol}:{i}"),
        strategy_id=strategy,
        symbol=symbol,
        side=side,
        qty=1.0 + i,
        reason=OrderReason.ENTRY_LONG if side is Side.BUY else OrderReason.EXIT_CROSS,
        ref_price=100.0 + i,
        ts=ts,
        cause=f"tick:{symbol}:{i}",
    )
    fill = Fill(
        order_id=order.id,
        strategy_id=strategy,
        symbol=symbol,
        side=side,
        qty=order.qty,
        price=100.5 + i,
        commission=0.25,
        ts=ts + timedelta(seconds=1),
        reason=order.reason,
    )
    position = Position(strategy_id=strategy, symbol=symbol, qty=float(i), avg_price=100.0 + i, ts=ts)
    return order, fill, position


def signal(i: int, strategy: str = "alpha", symbol: str = "AAPL") -> Signal:
    return Signal(
        strategy_id=strategy,
        symbol=symbol,
        ts=T0 + timedelta(minutes=i),
        direction="up" if i % 2 == 0 else "down",
        short_ma=100.0 + i,
        long_ma=99.0 + i,
        price=100.0 + i,
    )


async def fill_the_log(store: Store, count: int = 30) -> list[OrderRequest]:
    """`count` trades over two strategies and three symbols, one minute apart, in time order."""
    orders: list[OrderRequest] = []
    for i in range(count):
        order, fill, position = trade(i, STRATEGIES[i % 2], SYMBOLS[i % 3])
        assert await store.apply_fill(order, fill, position, source_offset=i)
        orders.append(order)
    return orders


async def walk(fetch: Any, query: Query) -> tuple[list[dict[str, Any]], int]:
    """Every item of every page, and the number of pages."""
    items: list[dict[str, Any]] = []
    pages = 0
    cursor: str | None = None
    while True:
        page = await fetch(
            Query(
                strategy_id=query.strategy_id,
                symbol=query.symbol,
                since=query.since,
                until=query.until,
                limit=query.limit,
                cursor=cursor,
                newest_first=query.newest_first,
            )
        )
        pages += 1
        assert len(page.items) <= query.limit
        items.extend(page.items)
        if page.next_cursor is None:
            return items, pages
        assert page.items, "a page with a next cursor has items"
        cursor = page.next_cursor


async def test_ping(store: Store) -> None:
    assert await store.ping()


async def test_apply_fill_is_idempotent(store: Store) -> None:
    assert await store.applied_offset() == -1
    order, fill, position = trade(1)
    assert await store.apply_fill(order, fill, position, source_offset=41)
    assert await store.applied_offset() == 41

    moved = position.model_copy(update={"qty": 99.0})
    assert not await store.apply_fill(order, fill, moved, source_offset=42)
    assert await store.applied_offset() == 41
    assert await store.position("alpha", "AAPL") == position
    orders = await store.orders(Query())
    fills = await store.fills(Query())
    assert orders.items == [order.model_dump(mode="json")]
    assert fills.items == [fill.model_dump(mode="json")]
    assert orders.next_cursor is None
    assert fills.next_cursor is None
    # Nor is the strategy's own view of the logs written twice.
    assert (await store.orders(Query(strategy_id="alpha"))).items == orders.items
    assert (await store.fills(Query(strategy_id="alpha"))).items == fills.items


async def test_positions(store: Store) -> None:
    await fill_the_log(store, 12)
    assert await store.position("alpha", "NOPE") is None
    everything = await store.positions()
    assert [(p.strategy_id, p.symbol) for p in everything] == sorted(
        {(STRATEGIES[i % 2], SYMBOLS[i % 3]) for i in range(12)}
    )
    alpha = await store.positions("alpha")
    assert alpha
    assert all(p.strategy_id == "alpha" for p in alpha)
    # The latest fill per strategy and symbol wins: i = 10 is alpha / MSFT.
    latest = await store.position("alpha", "MSFT")
    assert latest is not None
    assert latest.qty == 10.0
    assert await store.applied_offset() == 11


async def test_order_and_fill_queries_filter(store: Store) -> None:
    orders = await fill_the_log(store)
    ids_newest_first = [o.id for o in reversed(orders)]

    page = await store.orders(Query(limit=1000))
    assert [item["id"] for item in page.items] == ids_newest_first
    assert page.next_cursor is None
    oldest_first = await store.orders(Query(limit=1000, newest_first=False))
    assert [item["id"] for item in oldest_first.items] == [o.id for o in orders]

    by_strategy = await store.orders(Query(strategy_id="beta", limit=1000))
    assert [item["id"] for item in by_strategy.items] == [
        o.id for o in reversed(orders) if o.strategy_id == "beta"
    ]
    by_symbol = await store.fills(Query(symbol="MSFT", limit=1000))
    assert [item["order_id"] for item in by_symbol.items] == [
        o.id for o in reversed(orders) if o.symbol == "MSFT"
    ]
    both = await store.orders(Query(strategy_id="alpha", symbol="BTC-USD", limit=1000))
    assert [item["id"] for item in both.items] == [
        o.id for o in reversed(orders) if o.strategy_id == "alpha" and o.symbol == "BTC-USD"
    ]
    assert (await store.orders(Query(strategy_id="nobody"))).items == []

    # since <= ts < until, on the message's own timestamp (any time zone).
    since, until = (
        T0 + timedelta(minutes=5),
        (T0 + timedelta(minutes=15)).astimezone(timezone(timedelta(hours=-5))),
    )
    window = await store.orders(Query(since=since, until=until, limit=1000))
    assert [item["id"] for item in window.items] == [o.id for o in reversed(orders) if since <= o.ts < until]
    assert len(window.items) == 10
    fills_window = await store.fills(Query(since=since, symbol="AAPL", limit=1000, newest_first=False))
    assert [item["order_id"] for item in fills_window.items] == [
        o.id for o in orders if o.symbol == "AAPL" and o.ts + timedelta(seconds=1) >= since
    ]


@pytest.mark.parametrize("limit", [1, 4, 7, 30, 31])
@pytest.mark.parametrize("newest_first", [True, False])
async def test_pagination_neither_skips_nor_repeats(store: Store, limit: int, newest_first: bool) -> None:
    orders = await fill_the_log(store)
    expected = [o.id for o in (reversed(orders) if newest_first else orders)]
    items, pages = await walk(store.orders, Query(limit=limit, newest_first=newest_first))
    assert [item["id"] for item in items] == expected
    assert pages == -(-len(expected) // limit)

    expected_beta = [o.id for o in (reversed(orders) if newest_first else orders) if o.strategy_id == "beta"]
    items, _ = await walk(store.fills, Query(strategy_id="beta", limit=limit, newest_first=newest_first))
    assert [item["order_id"] for item in items] == expected_beta


async def fill_unevenly(store: Store) -> list[OrderRequest]:
    """40 trades: alpha's mostly, beta's every 8th, gamma's twice; one minute apart, in time order."""
    orders: list[OrderRequest] = []
    for i in range(40):
        strategy = "gamma" if i in (13, 27) else "beta" if i % 8 == 3 else "alpha"
        order, fill, position = trade(i, strategy, SYMBOLS[i % 3])
        assert await store.apply_fill(order, fill, position, source_offset=i)
        orders.append(order)
    return orders


@pytest.mark.parametrize("limit", [1, 3, 100])
@pytest.mark.parametrize("newest_first", [True, False])
async def test_filtered_pagination_by_strategy_and_time(store: Store, limit: int, newest_first: bool) -> None:
    """Issue 14.11: a page filtered by strategy (one with many entries, few, none), with or without a time
    window, walks exactly the log's matching entries, as the unfiltered walk filtered afterwards."""
    orders = await fill_unevenly(store)
    ordered = list(reversed(orders)) if newest_first else orders
    windows = [(None, None), (T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)), (T0, T0)]
    for strategy in ("alpha", "beta", "gamma", "nobody"):
        for since, until in windows:
            query = Query(
                strategy_id=strategy, since=since, until=until, limit=limit, newest_first=newest_first
            )
            items, pages = await walk(store.orders, query)
            expected = [
                o.id
                for o in ordered
                if o.strategy_id == strategy
                and (since is None or o.ts >= since)
                and (until is None or o.ts < until)
            ]
            assert [item["id"] for item in items] == expected, (strategy, since, until)
            assert pages == max(1, -(-len(expected) // limit))
            fills, _ = await walk(store.fills, query)
            assert [item["order_id"] for item in fills] == expected


@pytest.mark.parametrize("newest_first", [True, False])
async def test_cursors_carry_over_between_filtered_and_unfiltered_pages(
    store: Store, newest_first: bool
) -> None:
    """A cursor is a position in the log, whichever page handed it out: a filtered page after an unfiltered
    page's cursor (and the other way round) continues strictly after that entry."""
    orders = await fill_unevenly(store)
    ordered = list(reversed(orders)) if newest_first else orders
    unfiltered = await store.orders(Query(limit=10, newest_first=newest_first))
    assert unfiltered.next_cursor is not None
    beta = await store.orders(
        Query(strategy_id="beta", limit=100, cursor=unfiltered.next_cursor, newest_first=newest_first)
    )
    assert [item["id"] for item in beta.items] == [o.id for o in ordered[10:] if o.strategy_id == "beta"]
    first_beta = await store.orders(Query(strategy_id="beta", limit=1, newest_first=newest_first))
    assert first_beta.next_cursor is not None
    rest = await store.orders(Query(limit=100, cursor=first_beta.next_cursor, newest_first=newest_first))
    after = next(i for i, o in enumerate(ordered) if o.strategy_id == "beta") + 1
    assert [item["id"] for item in rest.items] == [o.id for o in ordered[after:]]


@pytest.mark.parametrize("newest_first", [True, False])
async def test_a_filtered_page_holds_only_what_the_log_kept(store: Store, newest_first: bool) -> None:
    """A strategy that stopped appending while the others filled the log past `maxlen` has its trimmed entries
    gone from its filtered pages too, and its kept ones there, in order, whatever the cursor."""
    appended = [signal(i, "beta" if i in (1, 2, 9) else "alpha") for i in range(14)]
    for s in appended[:5]:
        await store.append_signal(s, maxlen=6)
    # A cursor handed out before the trimming (at beta's first entry) pages on to what is kept.
    early = await store.signals(Query(strategy_id="beta", limit=1, newest_first=False))
    assert early.items == [appended[1].model_dump(mode="json")]
    for s in appended[5:]:
        await store.append_signal(s, maxlen=6)
    kept = appended[-6:]
    expected = [s.model_dump(mode="json") for s in (reversed(kept) if newest_first else kept)]
    for strategy in ("alpha", "beta", "nobody"):
        items, _ = await walk(store.signals, Query(strategy_id=strategy, limit=1, newest_first=newest_first))
        assert items == [item for item in expected if item["strategy_id"] == strategy]
    after_early = await store.signals(Query(strategy_id="beta", newest_first=False, cursor=early.next_cursor))
    assert after_early.items == [appended[9].model_dump(mode="json")]


async def test_pagination_is_stable_while_the_log_grows(store: Store) -> None:
    orders = await fill_the_log(store, 10)
    first = await store.orders(Query(limit=4))
    for i in range(10, 15):  # new fills arrive between two page requests
        order, fill, position = trade(i)
        await store.apply_fill(order, fill, position, source_offset=i)
    seen = [item["id"] for item in first.items]
    cursor = first.next_cursor
    while cursor is not None:
        page = await store.orders(Query(limit=4, cursor=cursor))
        seen.extend(item["id"] for item in page.items)
        cursor = page.next_cursor
    assert seen == [o.id for o in reversed(orders)]


async def test_a_bad_cursor_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.orders(Query(cursor="not a cursor"))


async def test_last_prices(store: Store) -> None:
    assert await store.last_prices() == {}
    await store.set_last_price("AAPL", 190.5, T0)
    await store.set_last_price("MSFT", 410.25, T0)
    later = (T0 + timedelta(seconds=3)).astimezone(timezone(timedelta(hours=2)))
    await store.set_last_price("AAPL", 191.0, later)
    prices = await store.last_prices()
    assert prices == {"AAPL": (191.0, later), "MSFT": (410.25, T0)}
    assert prices["AAPL"][1].utcoffset() == timedelta(hours=2)


async def test_price_history_is_trimmed_to_maxlen(store: Store) -> None:
    points = [(T0 + timedelta(seconds=i), 100.0 + i / 8) for i in range(30)]
    for ts, price in points:
        await store.append_price("AAPL", price, ts, maxlen=10)
    await store.append_price("MSFT", 5.0, T0)
    assert await store.prices("AAPL") == points[-10:]
    assert await store.prices("AAPL", limit=3) == points[-3:]
    assert await store.prices("MSFT") == [(T0, 5.0)]
    assert await store.prices("NOPE") == []


async def test_price_batches_equal_single_appends(store: Store) -> None:
    points = [(T0 + timedelta(seconds=i), 50.0 + i / 4) for i in range(25)]
    await store.append_prices("AAPL", [(price, ts) for ts, price in points[:20]], maxlen=12)
    await store.append_prices("AAPL", [(price, ts) for ts, price in points[20:]], maxlen=12)
    await store.append_prices("AAPL", [], maxlen=12)
    assert await store.prices("AAPL") == points[-12:]


async def test_recording_every_symbols_prices_at_once_equals_one_call_per_symbol(store: Store) -> None:
    """The feed's periodic write: last prices and histories of many symbols in one call, each history
    trimmed to `maxlen`, the change count moved on (the API's caches see the write)."""
    history = {
        "AAPL": [(100.0 + i, T0 + timedelta(seconds=i)) for i in range(7)],
        "MSFT": [(50.0, T0)],
        "IDLE": [],
    }
    latest = {"AAPL": history["AAPL"][-1], "MSFT": history["MSFT"][-1]}
    before = await store.changes()
    await store.record_prices(latest, history, maxlen=5)
    assert await store.last_prices() == latest
    assert await store.prices("AAPL") == [(ts, price) for price, ts in history["AAPL"][-5:]]
    assert await store.prices("MSFT") == [(T0, 50.0)]
    assert await store.prices("IDLE") == []
    if before is not None:
        assert (await store.changes() or 0) > before
    later = (110.0, T0 + timedelta(minutes=1))
    await store.record_prices({"AAPL": later}, {"AAPL": [later]}, maxlen=5)
    assert (await store.last_prices())["AAPL"] == later
    assert (await store.prices("AAPL"))[-2:] == [(history["AAPL"][-1][1], 106.0), (later[1], 110.0)]
    await store.record_prices({}, {})  # nothing seen since the last write: nothing to do


async def test_a_batch_of_signals_equals_appending_them_one_by_one(store: Store) -> None:
    signals = [signal(i, STRATEGIES[i % 2], SYMBOLS[i % 3]) for i in range(9)]
    await store.append_signals(signals[:4], maxlen=6)
    await store.append_signals([], maxlen=6)
    await store.append_signals(signals[4:], maxlen=6)
    items, _ = await walk(store.signals, Query(limit=2, newest_first=False))
    assert items == [s.model_dump(mode="json") for s in signals[-6:]]
    for strategy in STRATEGIES:
        mine, _ = await walk(store.signals, Query(strategy_id=strategy, newest_first=False))
        assert mine == [s.model_dump(mode="json") for s in signals[-6:] if s.strategy_id == strategy]


async def test_signals(store: Store) -> None:
    signals = [signal(i, STRATEGIES[i % 2], SYMBOLS[i % 3]) for i in range(12)]
    for s in signals:
        await store.append_signal(s, maxlen=10)
    kept = signals[-10:]
    page = await store.signals(Query(limit=100))
    assert page.items == [s.model_dump(mode="json") for s in reversed(kept)]
    alpha = await store.signals(Query(strategy_id="alpha", limit=100))
    assert alpha.items == [s.model_dump(mode="json") for s in reversed(kept) if s.strategy_id == "alpha"]
    items, pages = await walk(store.signals, Query(limit=3))
    assert items == page.items
    assert pages == 4
    since = await store.signals(Query(since=T0 + timedelta(minutes=9), newest_first=False))
    assert [item["ts"] for item in since.items] == [s.model_dump(mode="json")["ts"] for s in signals[9:]]


async def test_events(store: Store) -> None:
    events = [
        StrategyEvent(
            ts=T0 + timedelta(minutes=i),
            strategy_id=STRATEGIES[i % 2],
            kind="halt" if i % 3 else "force-exit-request",
            symbol=None if i % 3 else "AAPL",
            message=f"event {i}",
        )
        for i in range(7)
    ]
    for event in events:
        await store.append_event(event, maxlen=5)
    page = await store.events(Query(limit=100))
    assert page.items == [e.model_dump(mode="json") for e in reversed(events[-5:])]
    beta = await store.events(Query(strategy_id="beta", limit=100))
    assert [item["message"] for item in beta.items] == ["event 5", "event 3"]


def bar(i: int, symbol: str = "AAPL", timeframe: str = "1m", source: str = "alpha") -> ClosedBar:
    return ClosedBar(
        symbol=symbol,
        timeframe=timeframe,
        ts=T0 + timedelta(minutes=i),
        open=100.0 + i,
        high=102.0 + i,
        low=99.0 + i,
        close=101.0 + i,
        volume=float(abs(i)),
        source=source,
    )


async def test_bars_keep_one_per_symbol_and_open_time(store: Store) -> None:
    """Several strategies on one timeframe publish the same bars, and a restarted one publishes again:
    the log keeps the first of each open time, per symbol and timeframe, in order, trimmed to `maxlen`."""
    for i in range(12):
        for symbol in ("AAPL", "MSFT"):
            assert await store.append_bar(bar(i, symbol), maxlen=20)
            assert not await store.append_bar(bar(i, symbol, source="beta"), maxlen=20)
        assert not await store.append_bar(bar(i - 1), maxlen=20)  # an older one, redelivered
    assert await store.append_bar(bar(0, timeframe="5m"), maxlen=20)
    page = await store.bars("1m", Query(limit=100))
    assert page.items == [
        bar(i, symbol).model_dump(mode="json") for i in reversed(range(2, 12)) for symbol in ("MSFT", "AAPL")
    ]
    aapl = await store.bars("1m", Query(symbol="AAPL", since=T0 + timedelta(minutes=9), newest_first=False))
    assert [item["close"] for item in aapl.items] == [110.0, 111.0, 112.0]
    items, pages = await walk(lambda q: store.bars("1m", q), Query(limit=7))
    assert items == page.items
    assert pages == 3
    assert (await store.bars("5m", Query())).items == [bar(0, timeframe="5m").model_dump(mode="json")]
    assert (await store.bars("1h", Query())).items == []


async def test_equity_curve(store: Store) -> None:
    points = [(T0 + timedelta(days=i), 10_000.0 + 12.5 * i) for i in range(5)]
    for ts, equity in points:
        await store.append_equity("alpha", ts, equity, maxlen=3)
    await store.append_equity("beta", T0, 1.0)
    assert await store.equity_curve("alpha") == points[-3:]
    assert await store.equity_curve("alpha", limit=2) == points[-2:]
    assert await store.equity_curve("beta") == [(T0, 1.0)]
    assert await store.equity_curve("nobody") == []


async def test_strategies_and_the_halt_flag(store: Store) -> None:
    assert await store.strategies() == []
    await store.register_strategy("beta", {"symbols": ["MSFT"], "short": 5, "long": 20})
    await store.register_strategy("alpha", {"symbols": ["AAPL", "BTC-USD"], "short": 10, "long": 50})
    assert not await store.is_halted("alpha")
    await store.set_halted("alpha", True)
    await store.set_halted("alpha", True)
    assert await store.is_halted("alpha")
    assert await store.strategies() == [
        {"id": "alpha", "symbols": ["AAPL", "BTC-USD"], "short": 10, "long": 50, "halted": True},
        {"id": "beta", "symbols": ["MSFT"], "short": 5, "long": 20, "halted": False},
    ]
    await store.set_halted("alpha", False)
    assert not await store.is_halted("alpha")
    assert [s["halted"] for s in await store.strategies()] == [False, False]


async def test_delivery_marks_last_their_ttl(store: Store) -> None:
    """The notifier's marks: absent until set, present after, gone once their TTL is over."""
    assert not await store.was_delivered("slack|fill:o1")
    await store.mark_delivered("slack|fill:o1", ttl_s=1)
    assert await store.was_delivered("slack|fill:o1")
    assert not await store.was_delivered("discord|fill:o1")
    with pytest.raises(ValueError, match="ttl_s"):
        await store.mark_delivered("x", ttl_s=0)
    await asyncio.sleep(1.2)
    assert not await store.was_delivered("slack|fill:o1")


async def test_a_wiped_view_is_refused_where_the_writer_expected_its_fills(store: Store) -> None:
    """A writer that applied fills before and finds no applied offset is told the view was lost (Redis came
    back empty), and nothing is written: applying on would leave a view holding only what follows the wipe."""
    order, fill, position = trade(1)
    assert await store.apply_fill(order, fill, position, source_offset=7)
    await store.clear()  # what a Redis restart without persistence, or FLUSHALL, leaves
    later, later_fill, later_position = trade(2)
    with pytest.raises(ViewLostError):
        await store.apply_fill(later, later_fill, later_position, source_offset=9, expect_applied=True)
    await assert_empty(store)
    # The rebuild from the topic starts from nothing and is applied in order.
    assert await store.apply_fill(order, fill, position, source_offset=7)
    assert await store.apply_fill(later, later_fill, later_position, source_offset=9, expect_applied=True)
    assert [f["order_id"] for f in (await store.fills(Query(newest_first=False))).items] == [
        order.id,
        later.id,
    ]


async def populate(store: Store) -> None:
    await fill_the_log(store, 3)
    await store.set_last_price("AAPL", 1.0, T0)
    await store.append_price("AAPL", 1.0, T0)
    await store.append_signal(signal(1))
    await store.append_bar(bar(1))
    await store.append_equity("alpha", T0, 1.0)
    await store.register_strategy("alpha", {})
    await store.set_halted("alpha", True)


async def assert_empty(store: Store) -> None:
    assert await store.applied_offset() == -1
    assert (await store.orders(Query())).items == []
    assert (await store.fills(Query())).items == []
    assert (await store.signals(Query())).items == []
    assert (await store.bars("1m", Query())).items == []
    assert await store.append_bar(bar(1))  # the newest open time was forgotten too
    await store.clear()
    assert await store.positions() == []
    assert await store.last_prices() == {}
    assert await store.prices("AAPL") == []
    assert await store.equity_curve("alpha") == []
    assert await store.strategies() == []
    assert not await store.is_halted("alpha")


async def test_clear_forgets_only_its_own_prefix(
    store_factory: StoreFactory, request: pytest.FixtureRequest
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    mine, neighbour = store_factory(prefix), store_factory(prefix + "x")
    try:
        await populate(mine)
        await populate(neighbour)
        await mine.clear()
        await assert_empty(mine)
        assert await neighbour.applied_offset() == 2
        assert len((await neighbour.orders(Query())).items) == 3
        assert await neighbour.is_halted("alpha")
        # The cleared store works as new.
        order, fill, position = trade(0)
        assert await mine.apply_fill(order, fill, position, source_offset=0)
    finally:
        await mine.clear()
        await neighbour.clear()
        await mine.close()
        await neighbour.close()


async def test_redis_clear_keeps_foreign_keys(redis_server: RedisServer) -> None:
    from tradebot.adapters.redis_store import RedisStore

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_server.url, prefix=prefix)
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    foreign = [f"foreign-{prefix}", f"{prefix}x:orders", f"other:{prefix}:orders", f"{prefix}"]
    try:
        await populate(store)
        for key in foreign:
            await client.set(key, "keep")
        assert len([k async for k in client.scan_iter(match=f"{prefix}:*")]) > 5
        await store.clear()
        # All but the change count, which never goes back (Store.changes).
        assert [k async for k in client.scan_iter(match=f"{prefix}:*")] == [f"{prefix}:changes"]
        for key in foreign:
            assert await client.get(key) == "keep"
    finally:
        await client.delete(*foreign)
        await store.close()
        await client.aclose()


async def test_every_write_moves_the_change_count_on_and_nothing_else_does(store: Store) -> None:
    """`changes` is what the API's answers are kept by: a write it missed would leave an answer stale."""
    order, fill, position = trade(0)
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "set_last_price": lambda: store.set_last_price("AAPL", 101.0, T0),
        "append_price": lambda: store.append_price("AAPL", 101.0, T0),
        "append_prices": lambda: store.append_prices("AAPL", [(101.5, T0), (102.0, T0)]),
        "apply_fill": lambda: store.apply_fill(order, fill, position, source_offset=0),
        "append_signal": lambda: store.append_signal(signal(0)),
        "append_event": lambda: store.append_event(
            StrategyEvent(ts=T0, strategy_id="alpha", kind="halt", symbol=None, message="halted")
        ),
        "append_bar": lambda: store.append_bar(bar(0)),
        "append_equity": lambda: store.append_equity("alpha", T0, 1000.0),
        "register_strategy": lambda: store.register_strategy("alpha", {"symbols": ["AAPL"]}),
        "set_halted": lambda: store.set_halted("alpha", True),
    }
    seen = [await store.changes()]
    for name, write in writes.items():
        await write()
        now = await store.changes()
        assert now is not None, name
        assert seen[-1] is None or now > seen[-1], f"{name} did not move the change count on"
        seen.append(now)
    before = await store.changes()
    assert not await store.apply_fill(order, fill, position, source_offset=0)  # applied already: no write
    assert not await store.append_bar(bar(0))  # kept already
    await store.positions()
    await store.orders(Query())
    await store.mark_delivered("k", 60)  # the notifier's marks: no answer shows them
    assert await store.changes() == before, "reads and refused writes leave the count as it was"
    await store.clear()
    cleared = await store.changes()
    assert cleared is not None
    assert before is not None
    assert cleared > before, "clear moves the count on: an answer made before it must not match after"
