"""The API over a real Redis store: reads with filters and pagination, auth on halt/resume, CORS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.plugins.servers import RedisServer
from tradebot.adapters.redis_store import RedisStore
from tradebot.api.app import ApiSettings, create_api
from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason, OrderRequest, Side, order_id
from tradebot.executor.broker import PaperBroker

T0 = datetime(2024, 3, 1, tzinfo=UTC)
TOKEN = "s3cret-token"


def seed(store: RedisStore) -> None:
    async def run() -> None:
        await store.register_strategy("alpha", {"symbols": ["AAA", "BBB"], "params": {"short_window": 5}})
        await store.register_strategy("beta", {"symbols": ["AAA"], "params": {"short_window": 9}})
        broker = PaperBroker(Costs(commission_pct=0.1))
        offset = 0
        for i in range(30):
            strategy = "alpha" if i % 3 else "beta"
            symbol = "AAA" if i % 2 else "BBB"
            if strategy == "beta":
                symbol = "AAA"
            side = Side.BUY if broker.book(strategy, symbol).qty == 0 else Side.SELL
            reason = OrderReason.ENTRY_LONG if side is Side.BUY else OrderReason.EXIT_CROSS
            order = OrderRequest(
                id=order_id(strategy, symbol, f"tick:{i}"),
                strategy_id=strategy,
                symbol=symbol,
                side=side,
                qty=2,
                reason=reason,
                ref_price=100.0 + i,
                ts=T0 + timedelta(minutes=i),
                cause=f"tick:{i}",
            )
            record = broker.execute(order, now=T0 + timedelta(minutes=i), halted=False, last_price=None)
            assert record is not None
            await store.apply_fill(record.order, record.fill, record.position, offset)
            offset += 1
        # Leave one position open per strategy, so marking to the last price matters.
        for n, (strategy, symbol) in enumerate((("alpha", "BBB"), ("beta", "AAA"))):
            if broker.book(strategy, symbol).qty == 0:
                order = OrderRequest(
                    id=order_id(strategy, symbol, f"open:{n}"),
                    strategy_id=strategy,
                    symbol=symbol,
                    side=Side.BUY,
                    qty=3,
                    reason=OrderReason.ENTRY_LONG,
                    ref_price=120.0,
                    ts=T0 + timedelta(minutes=40 + n),
                    cause=f"open:{n}",
                )
                record = broker.execute(order, now=order.ts, halted=False, last_price=None)
                assert record is not None
                await store.apply_fill(record.order, record.fill, record.position, offset)
                offset += 1
        await store.set_last_price("AAA", 150.0, T0 + timedelta(hours=1))
        await store.set_last_price("BBB", 90.0, T0 + timedelta(hours=1))

    asyncio.run(run())


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[TestClient]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    seed(RedisStore(redis_server.url, prefix=prefix))
    settings = ApiSettings(redis_url=redis_server.url, api_token=TOKEN, cors_origins="https://dash.example")
    app = create_api(settings, RedisStore(redis_server.url, prefix=prefix))
    with TestClient(app) as test_client:
        yield test_client


def test_seed_promises(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert "Welcome" in client.get("/").json()["message"]
    assert client.get("/readyz").status_code == 200
    assert "tradebot_http_requests_total" in client.get("/metrics").text
    assert client.get("/openapi.json").json()["info"]["title"] == "tradebot API"


def test_orders_filter_and_paginate_without_gaps_or_repeats(client: TestClient) -> None:
    everything = client.get("/orders", params={"limit": 1000}).json()["items"]
    assert len(everything) >= 30
    assert [o["ts"] for o in everything] == sorted((o["ts"] for o in everything), reverse=True)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"strategy": "alpha", "limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/orders", params=params).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    alpha = [o["id"] for o in everything if o["strategy_id"] == "alpha"]
    assert seen == alpha
    window = client.get(
        "/fills",
        params={
            "since": (T0 + timedelta(minutes=10)).isoformat(),
            "until": (T0 + timedelta(minutes=20)).isoformat(),
            "symbol": "AAA",
        },
    ).json()["items"]
    assert window
    assert all(f["symbol"] == "AAA" and "10" <= f["ts"][14:16] < "20" for f in window)
    assert client.get("/orders", params={"cursor": "nonsense"}).status_code == 422
    assert client.get("/orders", params={"since": "2024-01-01T00:00:00"}).status_code == 422  # naive time


def test_positions_and_pnl_mark_to_the_last_price(client: TestClient) -> None:
    positions = client.get("/positions").json()["items"]
    open_positions = [p for p in positions if p["qty"] != 0]
    assert open_positions
    for p in open_positions:
        mark = 150.0 if p["symbol"] == "AAA" else 90.0
        assert p["unrealized_pnl"] == pytest.approx(p["qty"] * (mark - p["avg_price"]))
    pnl = {row["strategy_id"]: row for row in client.get("/pnl").json()["items"]}
    assert set(pnl) == {"alpha", "beta"}
    for row in pnl.values():
        assert row["total_pnl"] == pytest.approx(
            row["realized_pnl"] - row["commissions"] + row["unrealized_pnl"]
        )


def test_halt_and_resume_need_the_token(client: TestClient) -> None:
    assert client.post("/strategies/alpha/halt").status_code == 401
    assert client.post("/strategies/alpha/halt", headers={"Authorization": "Bearer wrong"}).status_code == 403
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/strategies/nobody/halt", headers=auth).status_code == 404
    assert client.post("/strategies/alpha/halt", headers=auth).json() == {"id": "alpha", "halted": True}
    states = {s["id"]: s["halted"] for s in client.get("/strategies").json()["items"]}
    assert states == {"alpha": True, "beta": False}
    assert client.post("/strategies/alpha/resume", headers=auth).json()["halted"] is False


def test_cors_allows_only_configured_origins(client: TestClient) -> None:
    allowed = client.options(
        "/strategies/alpha/halt",
        headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.headers.get("access-control-allow-origin") == "https://dash.example"
    denied = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers
