"""The API's answer caches (issue 17.6) are never stale: a read over an unchanged store answers what it answered,
and once a fill, a price, an event or a bar is written every read that shows it answers the new state, the same
as an API that never cached anything."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient

from tests.plugins.servers import RedisServer
from tests.services.test_api import T0, TOKEN, minute_bar, seed
from tradebot.adapters.redis_store import RedisStore
from tradebot.api.app import ApiSettings, create_api
from tradebot.core.cockpit import StrategyEvent
from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason, OrderRequest, Side, order_id
from tradebot.executor.broker import PaperBroker

# What the live page reads, each cached.
READS = [
    "/summary",
    "/trades?strategy=alpha",
    "/trades?strategy=alpha&symbol=AAA&limit=1",
    "/trades",
    "/equity/marked?strategy=alpha",
    "/orders?strategy=alpha&limit=5",
    "/fills?limit=5",
    "/events?strategy=alpha",
    "/market?symbol=AAA&symbol=BBB&strategy=alpha",
    "/bars?symbol=AAA&timeframe=1m&limit=5",
]


@pytest.fixture
def prefix(redis_server: RedisServer) -> str:
    name = f"cache-{uuid.uuid4().hex[:8]}"
    seed(RedisStore(redis_server.url, prefix=name))
    return name


def api(redis_server: RedisServer, prefix: str) -> TestClient:
    settings = ApiSettings(redis_url=redis_server.url, api_token=TOKEN)
    return TestClient(create_api(settings, RedisStore(redis_server.url, prefix=prefix)))


def answers(client: TestClient) -> dict[str, object]:
    found = {}
    for path in READS:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        found[path] = response.json()
    return found


def write_more(url: str, prefix: str) -> None:
    """A new fill of alpha in AAA, a price after it, a command given and a new 1m bar."""

    async def run() -> None:
        store = RedisStore(url, prefix=prefix)
        ts = T0 + timedelta(hours=2)
        order = OrderRequest(
            id=order_id("alpha", "AAA", "tick:late"),
            strategy_id="alpha",
            symbol="AAA",
            side=Side.BUY,
            qty=5,
            reason=OrderReason.ENTRY_LONG,
            ref_price=140.0,
            ts=ts,
            cause="tick:late",
        )
        record = PaperBroker(Costs(commission_pct=0.1)).execute(order, now=ts, halted=False, last_price=None)
        assert record is not None
        assert await store.apply_fill(record.order, record.fill, record.position, 1000)
        await store.set_last_price("AAA", 145.0, ts + timedelta(seconds=1))
        await store.append_prices("AAA", [(145.0, ts + timedelta(seconds=1))])
        await store.append_event(
            StrategyEvent(
                ts=ts, strategy_id="alpha", kind="halt", symbol=None, message="halted: no new entries"
            )
        )
        await store.append_bar(minute_bar("AAA", 500, "alpha"))
        await store.close()

    asyncio.run(run())


def test_a_new_fill_price_event_and_bar_change_every_cached_answer(
    redis_server: RedisServer, prefix: str
) -> None:
    with api(redis_server, prefix) as client:
        first = answers(client)
        assert answers(client) == first  # an unchanged store: the same answers (from the caches)
        write_more(redis_server.url, prefix)
        after = answers(client)
    for path in READS:
        assert after[path] != first[path], f"{path} answered what it answered before the new fill"
    with api(redis_server, prefix) as uncached:  # a new API has nothing cached: the same answers
        assert answers(uncached) == after


def redis_commands(url: str) -> int:
    """Commands the Redis server has run so far (INFO commandstats)."""
    admin = redis.Redis.from_url(url)
    try:
        stats: dict[str, dict[str, int]] = admin.info("commandstats")  # type: ignore[assignment]
        return sum(int(stat["calls"]) for stat in stats.values())
    finally:
        admin.close()


def test_an_unchanged_store_answers_each_cached_read_with_one_redis_command(
    redis_server: RedisServer, prefix: str
) -> None:
    """The change count first: unchanged since an answer was made, the answer is sent without reading what
    it was made of (issue 17.6: each cached read cost a dozen commands under 50 dashboards)."""
    with api(redis_server, prefix) as client:
        first = answers(client)
        idle = redis_commands(redis_server.url)
        idle = redis_commands(redis_server.url) - idle  # what asking costs by itself
        before = redis_commands(redis_server.url)
        assert answers(client) == first
        used = redis_commands(redis_server.url) - before - idle
    assert used == len(READS)
