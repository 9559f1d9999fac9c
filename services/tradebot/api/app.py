"""Routes of the API. Thin: each reads the store through the `StoreDep` dependency.

Reads are public; the two mutating endpoints need `Authorization: Bearer <TRADEBOT_API_TOKEN>`
(401 without a token, 403 with a wrong one).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, Field, SecretStr

from tradebot.adapters.connect import PipelineSettings
from tradebot.adapters.store import Page, Store
from tradebot.adapters.store import Query as StoreQuery
from tradebot.kit.app import create_service_app


class ApiSettings(PipelineSettings):
    service_name: str = "api"
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token for halt/resume; unset: they answer 503."
    )
    cors_origins: str = Field(
        default="", description="Comma-separated origins allowed by CORS (empty: none)."
    )

    def origins(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]
_bearer = HTTPBearer(auto_error=False)


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    expected: SecretStr | None = request.app.state.api_token
    if expected is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "no API token is configured (TRADEBOT_API_TOKEN)"
        )
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(credentials.credentials.encode(), expected.get_secret_value().encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the token is not valid")


AuthDep = Annotated[None, Depends(require_token)]


class PageOut(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class QueryParams(BaseModel):
    strategy: str | None = None
    symbol: str | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None
    order: str = Field(default="desc", pattern="^(asc|desc)$")

    def to_store(self) -> StoreQuery:
        return StoreQuery(
            strategy_id=self.strategy,
            symbol=self.symbol,
            since=self.since,
            until=self.until,
            limit=self.limit,
            cursor=self.cursor,
            newest_first=self.order == "desc",
        )


QueryDep = Annotated[QueryParams, Query()]


def _page(page: Page) -> PageOut:
    return PageOut(items=page.items, next_cursor=page.next_cursor)


async def _paged(fetch: Any, query: StoreQuery) -> PageOut:
    try:
        return _page(await fetch(query))
    except ValueError as exc:  # a bad cursor
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


router = APIRouter()


@router.get("/", tags=["meta"], summary="Welcome")
async def welcome() -> dict[str, str]:
    return {"message": "Welcome to tradebot", "docs": "/docs", "health": "/health"}


@router.get("/health", tags=["meta"], summary="Health, as the first version promised")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/orders", tags=["trading"], response_model=PageOut, summary="The order log")
async def orders(store: StoreDep, params: QueryDep) -> PageOut:
    return await _paged(store.orders, params.to_store())


@router.get("/fills", tags=["trading"], response_model=PageOut, summary="Fills and refusals")
async def fills(store: StoreDep, params: QueryDep) -> PageOut:
    return await _paged(store.fills, params.to_store())


@router.get("/signals", tags=["trading"], response_model=PageOut, summary="Moving-average crosses")
async def signals(store: StoreDep, params: QueryDep) -> PageOut:
    return await _paged(store.signals, params.to_store())


@router.get("/positions", tags=["trading"], summary="Positions, marked at the last price")
async def positions(
    store: StoreDep, strategy: str | None = None, symbol: str | None = None
) -> dict[str, Any]:
    last = await store.last_prices()
    items = []
    for position in await store.positions(strategy):
        if symbol is not None and position.symbol != symbol:
            continue
        mark = last.get(position.symbol, (position.last_price, position.ts))[0]
        unrealized = position.qty * (mark - position.avg_price) if position.qty != 0.0 else 0.0
        item = position.model_dump(mode="json")
        item.update(last_price=mark, unrealized_pnl=unrealized)
        items.append(item)
    return {"items": items}


@router.get("/pnl", tags=["trading"], summary="P&L per strategy: realised, unrealised, commissions")
async def pnl(store: StoreDep, strategy: str | None = None) -> dict[str, Any]:
    by_strategy: dict[str, dict[str, float]] = {}
    for item in (await positions(store, strategy))["items"]:
        row = by_strategy.setdefault(
            item["strategy_id"], {"realized_pnl": 0.0, "unrealized_pnl": 0.0, "commissions": 0.0}
        )
        row["realized_pnl"] += item["realized_pnl"]
        row["unrealized_pnl"] += item["unrealized_pnl"]
        row["commissions"] += item["commissions"]
    items = [
        {
            "strategy_id": sid,
            **row,
            "total_pnl": row["realized_pnl"] - row["commissions"] + row["unrealized_pnl"],
        }
        for sid, row in sorted(by_strategy.items())
    ]
    return {"items": items}


@router.get("/equity", tags=["trading"], summary="A strategy's equity after each fill")
async def equity(
    store: StoreDep, strategy: str, limit: int = Query(default=1000, ge=1, le=10_000)
) -> dict[str, Any]:
    points = await store.equity_curve(strategy, limit)
    return {
        "strategy_id": strategy,
        "points": [{"ts": ts.isoformat(), "equity": value} for ts, value in points],
    }


@router.get("/prices", tags=["market"], summary="The last price of every symbol")
async def last_prices(store: StoreDep) -> dict[str, Any]:
    last = await store.last_prices()
    return {"items": [{"symbol": s, "price": p, "ts": ts.isoformat()} for s, (p, ts) in sorted(last.items())]}


@router.get("/prices/{symbol}", tags=["market"], summary="Recent prices of one symbol, oldest first")
async def price_history(
    store: StoreDep, symbol: str, limit: int = Query(default=1000, ge=1, le=5000)
) -> dict[str, Any]:
    points = await store.prices(symbol, limit)
    return {"symbol": symbol, "points": [{"ts": ts.isoformat(), "price": price} for ts, price in points]}


@router.get("/strategies", tags=["strategies"], summary="Registered strategies and whether they are halted")
async def strategies(store: StoreDep) -> dict[str, Any]:
    return {"items": await store.strategies()}


async def _known(store: Store, strategy_id: str) -> None:
    if strategy_id not in {s["id"] for s in await store.strategies()}:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no strategy {strategy_id!r}")


@router.post(
    "/strategies/{strategy_id}/halt", tags=["strategies"], summary="Stop new entries (needs the token)"
)
async def halt(store: StoreDep, strategy_id: str, _: AuthDep) -> dict[str, Any]:
    await _known(store, strategy_id)
    await store.set_halted(strategy_id, True)
    return {"id": strategy_id, "halted": True}


@router.post(
    "/strategies/{strategy_id}/resume", tags=["strategies"], summary="Allow entries again (needs the token)"
)
async def resume(store: StoreDep, strategy_id: str, _: AuthDep) -> dict[str, Any]:
    await _known(store, strategy_id)
    await store.set_halted(strategy_id, False)
    return {"id": strategy_id, "halted": False}


def create_api(settings: ApiSettings, store: Store, *, close_store: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_store:
            await store.close()

    app = create_service_app(settings, readiness_checks={"store": store.ping}, lifespan=lifespan)
    app.title = "tradebot API"
    app.state.store = store
    app.state.api_token = settings.api_token
    origins = settings.origins()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
        )
    app.include_router(router)
    return app
