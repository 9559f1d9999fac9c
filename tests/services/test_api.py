"""The API over a real Redis store: reads with filters and pagination, auth on halt/resume, CORS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.plugins.servers import RedisServer
from tradebot.adapters.redis_store import RedisStore
from tradebot.api.app import MAX_MARKET_SYMBOLS, ApiSettings, BarTimeframe, create_api, router
from tradebot.core.bars import TICK, TIMEFRAMES
from tradebot.core.costs import Costs
from tradebot.core.models import ClosedBar, OrderReason, OrderRequest, Side, order_id
from tradebot.core.params import StrategyParams
from tradebot.core.views import BarPage, FillPage, MarketActivity, OrderPage, PriceHistory, StrategyList
from tradebot.executor.broker import PaperBroker

T0 = datetime(2024, 3, 1, tzinfo=UTC)
TOKEN = "s3cret-token"


def seed(store: RedisStore) -> None:
    async def run() -> None:
        # What the strategy service registers (tradebot.strategy.runner).
        for sid, symbols, short in (("alpha", ["AAA", "BBB"], 5), ("beta", ["AAA"], 9)):
            await store.register_strategy(
                sid,
                {
                    "symbols": symbols,
                    "params": StrategyParams(short_window=short).model_dump(mode="json"),
                    "costs": Costs(commission_pct=0.1).model_dump(mode="json"),
                    "initial_cash": 25_000.0,
                },
            )
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
        for symbol, base in (("AAA", 100.0), ("BBB", 80.0)):
            await store.append_prices(symbol, [(base + i, T0 + timedelta(minutes=i)) for i in range(50)])
        # Closed 1m bars as two strategies on the timeframe publish them (each bar twice), and one 5m bar.
        for i in range(20):
            for source in ("alpha", "beta"):
                await store.append_bar(minute_bar("AAA", i, source))
        await store.append_bar(minute_bar("AAA", 0, "alpha").model_copy(update={"timeframe": "5m"}))

    asyncio.run(run())


def minute_bar(symbol: str, i: int, source: str) -> ClosedBar:
    return ClosedBar(
        symbol=symbol,
        timeframe="1m",
        ts=T0 + timedelta(minutes=i),
        open=100.0 + i,
        high=101.5 + i,
        low=99.5 + i,
        close=100.5 + i,
        volume=3.0,
        source=source,
    )


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


def test_every_route_answers_a_declared_model(client: TestClient) -> None:
    """The OpenAPI document names a response model for every route of ours, and no schema in it is an
    untyped object: what the API says it returns is what a client can parse."""
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    ours = {route.path for route in router.routes if isinstance(route, APIRoute)}
    assert ours <= set(document["paths"])
    answered: list[str] = []
    for path in ours:
        for method, operation in document["paths"][path].items():
            schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert "$ref" in schema, (method, path, schema)
            answered.append(schema["$ref"].rsplit("/", 1)[1])

    def untyped(node: object, where: str, seen: set[str]) -> list[str]:
        """Places under `node`, following references, where the schema says "any object" or "anything"."""
        found = []
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" not in node:
                found.append(where)
            if node.get("additionalProperties") is True or (where.endswith("/items") and node == {}):
                found.append(where)
            ref = node.get("$ref")
            if isinstance(ref, str) and (name := ref.rsplit("/", 1)[1]) not in seen:
                seen.add(name)
                found += untyped(schemas[name], name, seen)
            for key, value in node.items():
                found += untyped(value, f"{where}/{key}", seen)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                found += untyped(value, f"{where}/{i}", seen)
        return found

    seen: set[str] = set()
    assert [place for name in answered for place in untyped({"$ref": f"#/{name}"}, name, seen)] == []
    assert {"OrderPage", "FillPage", "StrategyList", "MarketActivity", "OrderRequest", "Fill"} <= seen


def test_answers_parse_into_their_models(client: TestClient) -> None:
    strategies = StrategyList.model_validate_json(client.get("/strategies").content).items
    assert [(s.id, s.params.short_window, s.initial_cash) for s in strategies] == [
        ("alpha", 5, 25_000.0),
        ("beta", 9, 25_000.0),
    ]
    assert strategies[0].costs.commission_pct == 0.1
    orders = OrderPage.model_validate_json(client.get("/orders", params={"limit": 5}).content)
    assert len(orders.items) == 5
    assert orders.next_cursor is not None


def test_market_serves_prices_orders_and_fills_of_each_symbol_in_one_request(client: TestClient) -> None:
    response = client.get(
        "/market", params={"symbol": ["BBB", "AAA"], "strategy": "alpha", "points": 20, "limit": 7}
    )
    assert response.status_code == 200
    market = MarketActivity.model_validate_json(response.content).items
    assert [m.symbol for m in market] == ["BBB", "AAA"]
    for activity in market:
        # The same as the three requests the live page used to make per symbol.
        prices = PriceHistory.model_validate_json(
            client.get(f"/prices/{activity.symbol}", params={"limit": 20}).content
        )
        filters = {"strategy": "alpha", "symbol": activity.symbol, "limit": 7}
        orders = OrderPage.model_validate_json(client.get("/orders", params=filters).content)
        fills = FillPage.model_validate_json(client.get("/fills", params=filters).content)
        assert activity.prices == prices.points
        assert len(activity.prices) == 20
        assert activity.orders == orders.items
        assert activity.fills == fills.items
        assert activity.orders
        assert {o.strategy_id for o in activity.orders} == {"alpha"}
        assert {f.symbol for f in activity.fills} == {activity.symbol}
    everyone = MarketActivity.model_validate_json(client.get("/market", params={"symbol": "AAA"}).content)
    assert {o.strategy_id for o in everyone.items[0].orders} == {"alpha", "beta"}
    assert client.get("/market").status_code == 422  # at least one symbol
    too_many = [f"S{i}" for i in range(MAX_MARKET_SYMBOLS + 1)]
    assert client.get("/market", params={"symbol": too_many}).status_code == 422


def test_bars_page_by_symbol_timeframe_and_time_like_the_other_logs(client: TestClient) -> None:
    """`GET /bars`: one bar per open time however many strategies published it, filtered by symbol and
    `since` on the open time, paged with the same cursors, limits and errors as the other routes."""
    first = BarPage.model_validate_json(
        client.get("/bars", params={"symbol": "AAA", "timeframe": "1m", "limit": 1000}).content
    )
    assert [bar.ts for bar in first.items] == [T0 + timedelta(minutes=i) for i in reversed(range(20))]
    assert {bar.source for bar in first.items} == {"alpha"}  # the first publisher of each bar
    assert first.next_cursor is None
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {
            "symbol": "AAA",
            "timeframe": "1m",
            "since": (T0 + timedelta(minutes=5)).isoformat(),
            "order": "asc",
            "limit": 4,
        }
        if cursor:
            params["cursor"] = cursor
        page = client.get("/bars", params=params).json()
        seen += [bar["ts"] for bar in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [(T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z") for i in range(5, 20)]
    assert client.get("/bars", params={"symbol": "BBB", "timeframe": "1m"}).json()["items"] == []
    five = client.get("/bars", params={"timeframe": "5m"}).json()["items"]
    assert [(bar["timeframe"], bar["close"]) for bar in five] == [("5m", 100.5)]
    assert client.get("/bars", params={"timeframe": "7m"}).status_code == 422
    assert client.get("/bars", params={"timeframe": "tick"}).status_code == 422
    assert client.get("/bars").status_code == 422  # the timeframe is required
    assert client.get("/bars", params={"timeframe": "1m", "cursor": "nonsense"}).status_code == 422


def test_the_bars_route_takes_every_bar_timeframe() -> None:
    assert get_args(BarTimeframe) == tuple(t for t in TIMEFRAMES if t != TICK)


def test_trades_page_the_closed_ones_and_filter_by_symbol(client: TestClient) -> None:
    whole = client.get("/trades?strategy=alpha").json()
    symbols = {t["symbol"] for t in whole["closed"]}
    assert symbols == {"AAA", "BBB"}, "the seed closes trades in both symbols"
    assert len(whole["closed"]) >= 3
    assert whole["closed_total"] == len(whole["closed"])

    paged = client.get("/trades?strategy=alpha&limit=2").json()
    assert paged["closed"] == whole["closed"][:2]  # newest exit first, like the whole list
    assert paged["closed_total"] == whole["closed_total"]
    assert (paged["open"], paged["by_symbol"], paged["by_day"]) == (
        whole["open"],
        whole["by_symbol"],
        whole["by_day"],
    ), "the profit tables are over every closed trade, however many are listed"

    for symbol in sorted(symbols):
        mine = client.get(f"/trades?strategy=alpha&symbol={symbol}&limit=1").json()
        closed = [t for t in whole["closed"] if t["symbol"] == symbol]
        assert mine["closed"] == closed[:1]
        assert mine["closed_total"] == len(closed)
        assert mine["open"] == [t for t in whole["open"] if t["symbol"] == symbol]
        assert [row["key"] for row in mine["by_symbol"]] == [symbol]
        assert sum(row["trades"] for row in mine["by_day"]) == len(closed)

    refused = client.get("/trades?limit=0")
    assert refused.status_code == 422
    assert "limit" in refused.text
