"""Issue 14.11, on a real Redis: a page filtered by strategy costs a few commands however long the log is.

Before, `_query` scanned the whole log for a strategy with no entries: 1,251 commands for one page of one over
20k entries (16 entries a read). Now it reads the strategy's own stream (see adapters/redis_store.py). The
commands are counted by the server (`INFO commandstats`, those run by scripts included), not timed.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from tests.plugins.servers import RedisServer
from tradebot.adapters.redis_store import RedisStore, micros
from tradebot.adapters.store import Page, Query, parse_cursor
from tradebot.core.models import Fill, OrderReason, OrderRequest, Position, Side, order_id

ENTRIES = 20_000
T0 = datetime(2024, 1, 2, tzinfo=UTC)
# One filtered page: the script that checks the strategy streams are complete (it runs 3 commands when they
# are), one read of the strategy's stream, and one read of the log per item on the page (one script, one round
# trip: the script is a command of its own). An unfiltered page of matching entries is one read.
MOST_COMMANDS_PER_FILTERED_PAGE = 6


def most_commands(page: Page) -> int:
    return MOST_COMMANDS_PER_FILTERED_PAGE + len(page.items)


def trade(i: int, strategy: str) -> tuple[OrderRequest, Fill, Position]:
    ts = T0 + timedelta(seconds=i)
    order = OrderRequest(
        id=order_id(strategy, "AAA", f"tick:AAA:{i}"),
        strategy_id=strategy,
        symbol="AAA",
        side=Side.BUY,
        qty=1.0,
        reason=OrderReason.ENTRY_LONG,
        ref_price=100.0,
        ts=ts,
        cause=f"tick:AAA:{i}",
    )
    fill = Fill(
        order_id=order.id,
        strategy_id=strategy,
        symbol="AAA",
        side=Side.BUY,
        qty=1.0,
        price=100.0,
        commission=0.0,
        ts=ts,
        reason=order.reason,
    )
    return order, fill, Position(strategy_id=strategy, symbol="AAA", qty=1.0, avg_price=100.0, ts=ts)


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"index-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    instance = RedisStore(redis_server.url, prefix=prefix)
    try:
        yield instance
    finally:
        await instance.clear()
        await instance.close()


async def commands_run(admin: aioredis.Redis, read: Callable[[], Awaitable[Page]]) -> tuple[Page, int]:
    """What `read` returned and how many commands the server ran for it (tests run one at a time)."""

    async def calls() -> int:
        stats = await admin.info("commandstats")
        return sum(int(stat["calls"]) for name, stat in stats.items() if name != "cmdstat_info")

    before = await calls()
    page = await read()
    return page, await calls() - before


async def test_a_filtered_page_costs_a_few_commands_however_long_the_log(
    store: RedisStore, admin: aioredis.Redis
) -> None:
    few = {5_000, 12_000, 19_990}  # strategy c's trades among a's
    for i in range(ENTRIES):
        order, fill, position = trade(i, "c" if i in few else "a")
        assert await store.apply_fill(order, fill, position, source_offset=i)
    await store.orders(Query(strategy_id="a", limit=1))  # loads the scripts (a first call also sends them)

    unfiltered, unfiltered_cost = await commands_run(admin, lambda: store.orders(Query(limit=1)))
    assert len(unfiltered.items) == 1
    for limit in (1, 100):
        for newest_first in (True, False):
            none_query = Query(strategy_id="b", limit=limit, newest_first=newest_first)
            none, cost = await commands_run(admin, functools.partial(store.orders, none_query))
            assert none.items == []
            assert none.next_cursor is None
            assert cost <= most_commands(none), (limit, newest_first, cost)

            some_query = Query(strategy_id="c", limit=limit, newest_first=newest_first)
            some, cost = await commands_run(admin, functools.partial(store.fills, some_query))
            expected = [trade(i, "c")[0].id for i in sorted(few, reverse=newest_first)][:limit]
            assert [item["order_id"] for item in some.items] == expected
            assert cost <= most_commands(some), (limit, newest_first, cost)
    # With a time window that holds one of c's trades, and a cursor from a page of all strategies.
    window = Query(
        strategy_id="c", since=T0 + timedelta(seconds=12_000), until=T0 + timedelta(seconds=12_001)
    )
    windowed, cost = await commands_run(admin, lambda: store.orders(window))
    assert [item["id"] for item in windowed.items] == [trade(12_000, "c")[0].id]
    assert cost <= most_commands(windowed)
    print(f"\n{ENTRIES} entries: {unfiltered_cost} commands unfiltered, {cost} filtered by strategy")


async def test_a_log_written_before_the_strategy_streams_is_answered_by_strategy(
    store: RedisStore, admin: aioredis.Redis, prefix: str
) -> None:
    """An upgrade: entries appended by a version without strategy streams (as it wrote them: the log alone)
    are in filtered pages, before and after this version appends, and again after the old one appends more."""
    log = f"{prefix}:orders"

    async def append_as_before(i: int, strategy: str) -> None:
        order = trade(i, strategy)[0]
        await admin.xadd(
            log,
            {
                "json": order.model_dump_json(),
                "order_id": order.id,
                "strategy_id": strategy,
                "symbol": "AAA",
                "ts": micros(order.ts),
            },
        )

    async def ids(strategy: str) -> list[str]:
        return [item["id"] for item in (await store.orders(Query(strategy_id=strategy, limit=1000))).items]

    def expected(strategy: str, *written: int) -> list[str]:
        return [trade(i, strategy)[0].id for i in sorted(written, reverse=True)]

    for i in range(6):
        await append_as_before(i, "a" if i % 3 else "b")
    assert await ids("b") == expected("b", 0, 3)
    assert await ids("a") == expected("a", 1, 2, 4, 5)

    order, fill, position = trade(6, "b")
    assert await store.apply_fill(order, fill, position, source_offset=6)
    await append_as_before(7, "a")  # the old version still running beside the new one (a handover)
    order, fill, position = trade(8, "a")
    assert await store.apply_fill(order, fill, position, source_offset=8)
    assert await ids("b") == expected("b", 0, 3, 6)
    assert await ids("a") == expected("a", 1, 2, 4, 5, 7, 8)
    assert await admin.xlen(f"{log}:strategy:a") == 6  # each entry copied once
    # Caught up: the next filtered pages cost what they cost with streams from the start.
    page, cost = await commands_run(admin, lambda: store.orders(Query(strategy_id="a")))
    assert cost <= most_commands(page)


async def test_a_rebuilt_projection_copies_each_entry_once_and_is_trimmed_with_its_log(
    redis_server: RedisServer, admin: aioredis.Redis
) -> None:
    """The executor rebuilds the view by clearing it (or finding it flushed) and applying the `fills` topic
    again: the strategy streams are written again with it, one copy per entry, and trimmed with the log."""
    prefix = f"index-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_server.url, prefix=prefix, stream_maxlen=300)
    try:
        for _ in range(2):
            await store.clear()
            for i in range(1_000):
                order, fill, position = trade(i, "a" if i % 4 else "b")
                assert await store.apply_fill(order, fill, position, source_offset=i)
            for i in range(1_000):  # redelivered: applied already, nothing written
                order, fill, position = trade(i, "a" if i % 4 else "b")
                assert not await store.apply_fill(order, fill, position, source_offset=i)
            log = await admin.xrange(f"{prefix}:fills")
            assert 300 <= len(log) <= 500  # trimmed approximately, whole nodes of 100
            # The first append after the clear marked the streams complete: no catch-up copy to make.
            assert await admin.get(f"{prefix}:fills:indexed") == log[-1][0]
            for strategy in ("a", "b"):
                copies = await admin.xrange(f"{prefix}:fills:strategy:{strategy}")
                in_log = [e for e in copies if parse_cursor(e[0]) >= parse_cursor(log[0][0])]
                # One copy of each of the strategy's entries, holding what a query filters on.
                assert in_log == [
                    (entry_id, {name: fields[name] for name in ("strategy_id", "symbol", "ts")})
                    for entry_id, fields in log
                    if fields["strategy_id"] == strategy
                ]
                assert len(copies) <= len(in_log) + 100  # trimmed to the log's oldest, whole nodes
                assert [e[1]["strategy_id"] for e in copies] == [strategy] * len(copies)
                page = await store.fills(Query(strategy_id=strategy, limit=1000, newest_first=False))
                all_page = await store.fills(Query(limit=1000, newest_first=False))
                assert page.items == [item for item in all_page.items if item["strategy_id"] == strategy]
    finally:
        await store.clear()
        await store.close()
