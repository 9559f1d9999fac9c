"""Routes of the API. Thin: each reads the store through the `StoreDep` dependency.

Reads are public; the two mutating endpoints need `Authorization: Bearer <TRADEBOT_API_TOKEN>`
(401 without a token, 403 with a wrong one). Every error answers one body shape, `ApiError`, and the OpenAPI
document lists each status a route can return; no input answers 5xx (503 means the store or the token is
missing, never the request).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, SecretStr, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradebot.adapters.bus import Bus, BusError, Producer
from tradebot.adapters.connect import PipelineSettings
from tradebot.adapters.store import CURSOR_PATTERN, Store, StoreError
from tradebot.adapters.store import Page as StorePage
from tradebot.adapters.store import Query as StoreQuery
from tradebot.adapters.topics import CONTROL, HaltCommand, pipeline_topics
from tradebot.core.models import ClosedBar, Fill, OrderRequest, Position, Signal
from tradebot.core.views import (
    BarPage,
    EquityCurve,
    EquityPoint,
    FillPage,
    HaltState,
    Health,
    LastPrice,
    LastPrices,
    MarketActivity,
    OrderPage,
    PnlList,
    PositionList,
    PriceHistory,
    PricePoint,
    SignalPage,
    StrategyInfo,
    StrategyList,
    StrategyPnl,
    SymbolActivity,
    Welcome,
)
from tradebot.kit.app import create_service_app
from tradebot.kit.settings import comma_list

# The live page charts a handful of symbols; a bound keeps one request from asking for the whole store.
MAX_MARKET_SYMBOLS = 50


class ApiSettings(PipelineSettings):
    service_name: str = "api"
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token for halt/resume; unset: they answer 503."
    )
    cors_origins: str = Field(
        default="", description="Comma-separated origins allowed by CORS (empty: none)."
    )

    def origins(self) -> list[str]:
        return comma_list(self.cors_origins)


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


class ApiError(BaseModel):
    """The body of every error answer (401, 403, 404, 422, 503)."""

    detail: str = Field(description="What is wrong, in one line.")


def _error(description: str) -> dict[str, Any]:
    return {"model": ApiError, "description": description}


# What every route can answer besides 200; halt/resume add 401, 403 and 404.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    422: _error("A parameter is invalid"),
    503: _error("The store is unreachable"),
}
CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    401: _error("No bearer token"),
    403: _error("The token is not valid"),
    404: _error("No such strategy"),
    503: _error("The store is unreachable, or no API token is configured"),
}


# RFC 3339, what the schema's `format: date-time` promises; pydantic alone also reads `0.5` (seconds since
# the epoch) or a date without a time, which a client of the schema cannot expect.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with a time zone, e.g. 2024-03-01T12:00:00Z")
    return value


DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class QueryParams(BaseModel):
    strategy: str | None = None
    symbol: str | None = None
    since: DateTime | None = Field(default=None, description="Entries at or after this time.")
    until: DateTime | None = Field(default=None, description="Entries before this time; not before `since`.")
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page; the page continues strictly after it.",
    )
    order: str = Field(default="desc", pattern="^(asc|desc)$")

    @model_validator(mode="after")
    def _range_in_order(self) -> QueryParams:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since must not be after until")
        return self

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
Record = TypeVar("Record", bound=BaseModel)


async def _records(
    fetch: Callable[[StoreQuery], Awaitable[StorePage]], query: StoreQuery, model: type[Record]
) -> tuple[list[Record], str | None]:
    """One page from the store, each record parsed back into the domain model the writer dumped (the store
    holds JSON, so ISO times and enum values are read as such: strict models, lax input)."""
    try:
        page = await fetch(query)
    except ValueError as exc:  # a bad cursor
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return [model.model_validate(item, strict=False) for item in page.items], page.next_cursor


# The only query parameters that take several values; any other given twice is refused (FastAPI would
# silently keep the last, so `?strategy=a&strategy=b` answered for b alone).
_MULTI_VALUED = {"/market": frozenset({"symbol"})}


def _one_value_each(request: Request) -> None:
    path = getattr(request.scope.get("route"), "path", "")
    multi = _MULTI_VALUED.get(path, frozenset())
    keys = [key for key, _ in request.query_params.multi_items()]
    repeated = sorted({key for key in keys if keys.count(key) > 1 and key not in multi})
    if repeated:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{', '.join(repeated)}: give one value, not several"
        )


router = APIRouter(responses=READ_ERRORS, dependencies=[Depends(_one_value_each)])


@router.get("/", tags=["meta"], summary="Welcome")
async def welcome() -> Welcome:
    return Welcome(message="Welcome to tradebot", docs="/docs", health="/health")


@router.get("/health", tags=["meta"], summary="Health, as the first version promised")
async def health() -> Health:
    return Health(status="ok")


@router.get("/orders", tags=["trading"], summary="The order log")
async def orders(store: StoreDep, params: QueryDep) -> OrderPage:
    items, cursor = await _records(store.orders, params.to_store(), OrderRequest)
    return OrderPage(items=items, next_cursor=cursor)


@router.get("/fills", tags=["trading"], summary="Fills and refusals")
async def fills(store: StoreDep, params: QueryDep) -> FillPage:
    items, cursor = await _records(store.fills, params.to_store(), Fill)
    return FillPage(items=items, next_cursor=cursor)


@router.get("/signals", tags=["trading"], summary="Moving-average crosses")
async def signals(store: StoreDep, params: QueryDep) -> SignalPage:
    items, cursor = await _records(store.signals, params.to_store(), Signal)
    return SignalPage(items=items, next_cursor=cursor)


# The bar timeframes of `tradebot.core.bars.TIMEFRAMES` (tests/services/test_api.py holds them equal).
BarTimeframe = Literal[
    "1s", "5s", "15s", "30s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"
]


@router.get("/bars", tags=["trading"], summary="Closed bars of a timeframe (candles)")
async def bars(
    store: StoreDep,
    params: QueryDep,
    timeframe: Annotated[
        BarTimeframe, Query(description="The bars' timeframe, as the strategies' `timeframe`.")
    ],
) -> BarPage:
    """Bars the strategies built from ticks and closed, newest first by default (`order=asc` for a chart);
    `since` and `until` on the bars' open time; `strategy` the publisher."""
    query = params.to_store()
    items, cursor = await _records(lambda q: store.bars(timeframe, q), query, ClosedBar)
    return BarPage(items=items, next_cursor=cursor)


async def _marked_positions(store: Store, strategy: str | None, symbol: str | None) -> list[Position]:
    last = await store.last_prices()
    marked = []
    for position in await store.positions(strategy):
        if symbol is not None and position.symbol != symbol:
            continue
        mark = last.get(position.symbol, (position.last_price, position.ts))[0]
        unrealized = position.qty * (mark - position.avg_price) if position.qty != 0.0 else 0.0
        marked.append(position.model_copy(update={"last_price": mark, "unrealized_pnl": unrealized}))
    return marked


@router.get("/positions", tags=["trading"], summary="Positions, marked at the last price")
async def positions(store: StoreDep, strategy: str | None = None, symbol: str | None = None) -> PositionList:
    return PositionList(items=await _marked_positions(store, strategy, symbol))


@router.get("/pnl", tags=["trading"], summary="P&L per strategy: realised, unrealised, commissions")
async def pnl(store: StoreDep, strategy: str | None = None) -> PnlList:
    by_strategy: dict[str, list[Position]] = {}
    for position in await _marked_positions(store, strategy, None):
        by_strategy.setdefault(position.strategy_id, []).append(position)
    items = []
    for sid, held in sorted(by_strategy.items()):
        realized = sum(p.realized_pnl for p in held)
        unrealized = sum(p.unrealized_pnl for p in held)
        commissions = sum(p.commissions for p in held)
        items.append(
            StrategyPnl(
                strategy_id=sid,
                realized_pnl=realized,
                unrealized_pnl=unrealized,
                commissions=commissions,
                total_pnl=realized - commissions + unrealized,
            )
        )
    return PnlList(items=items)


@router.get("/equity", tags=["trading"], summary="A strategy's equity after each fill")
async def equity(
    store: StoreDep, strategy: str, limit: int = Query(default=1000, ge=1, le=10_000)
) -> EquityCurve:
    points = await store.equity_curve(strategy, limit)
    return EquityCurve(
        strategy_id=strategy, points=[EquityPoint(ts=ts, equity=value) for ts, value in points]
    )


@router.get("/prices", tags=["market"], summary="The last price of every symbol")
async def last_prices(store: StoreDep) -> LastPrices:
    last = await store.last_prices()
    return LastPrices(items=[LastPrice(symbol=s, price=p, ts=ts) for s, (p, ts) in sorted(last.items())])


@router.get("/prices/{symbol}", tags=["market"], summary="Recent prices of one symbol, oldest first")
async def price_history(
    store: StoreDep, symbol: str, limit: int = Query(default=1000, ge=1, le=5000)
) -> PriceHistory:
    points = await store.prices(symbol, limit)
    return PriceHistory(symbol=symbol, points=[PricePoint(ts=ts, price=price) for ts, price in points])


@router.get(
    "/market",
    tags=["market"],
    summary="What the price charts show, per symbol: recent prices, orders and fills, in one request",
)
async def market(
    store: StoreDep,
    symbol: Annotated[list[str], Query(min_length=1, max_length=MAX_MARKET_SYMBOLS)],
    strategy: str | None = None,
    points: int = Query(default=1000, ge=1, le=5000, description="Prices per symbol, the newest ones."),
    limit: int = Query(default=1000, ge=1, le=1000, description="Orders and fills per symbol, newest first."),
) -> MarketActivity:
    async def one(sym: str) -> SymbolActivity:
        query = StoreQuery(strategy_id=strategy, symbol=sym, limit=limit)
        history, (sent, _), (filled, _) = await asyncio.gather(
            store.prices(sym, points),
            _records(store.orders, query, OrderRequest),
            _records(store.fills, query, Fill),
        )
        return SymbolActivity(
            symbol=sym,
            prices=[PricePoint(ts=ts, price=price) for ts, price in history],
            orders=sent,
            fills=filled,
        )

    return MarketActivity(items=list(await asyncio.gather(*(one(sym) for sym in symbol))))


@router.get("/strategies", tags=["strategies"], summary="Registered strategies and whether they are halted")
async def strategies(store: StoreDep) -> StrategyList:
    return StrategyList(items=[StrategyInfo.model_validate(item) for item in await store.strategies()])


async def _known(store: Store, strategy_id: str) -> None:
    if strategy_id not in {s["id"] for s in await store.strategies()}:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no strategy {strategy_id!r}")


@router.post(
    "/strategies/{strategy_id}/halt",
    tags=["strategies"],
    summary="Stop new entries (needs the token)",
    responses=CONTROL_ERRORS,
)
async def halt(request: Request, store: StoreDep, strategy_id: str, _: AuthDep) -> HaltState:
    await _known(store, strategy_id)
    await _command(request, store, HaltCommand(strategy_id=strategy_id, halted=True))
    return HaltState(id=strategy_id, halted=True)


@router.post(
    "/strategies/{strategy_id}/resume",
    tags=["strategies"],
    summary="Allow entries again (needs the token)",
    responses=CONTROL_ERRORS,
)
async def resume(request: Request, store: StoreDep, strategy_id: str, _: AuthDep) -> HaltState:
    await _known(store, strategy_id)
    await _command(request, store, HaltCommand(strategy_id=strategy_id, halted=False))
    return HaltState(id=strategy_id, halted=False)


# How long a halt or resume waits for Kafka's acknowledgement before it answers 503 (not recorded).
CONTROL_ACK_TIMEOUT_S = 10.0


async def _command(request: Request, store: Store, command: HaltCommand) -> None:
    """Records the command on `strategy-control` (the executor's source of truth, so a halt holds even
    when Redis loses it) and answers only once Kafka acknowledged it; then mirrors it to Redis for
    readers. Without a bus (tests of the API alone) only Redis is written."""
    producer: Producer | None = request.app.state.control_producer
    bus: Bus | None = request.app.state.bus
    if producer is not None and bus is not None:
        partitions: int = request.app.state.topic_partitions

        def send() -> None:
            # Created here, not at start-up: the API's reads must not wait for Kafka. Never left to the
            # broker's auto-creation, which would make the topic uncompacted.
            bus.ensure_topics(pipeline_topics(partitions))
            producer.produce(CONTROL, command.model_dump_json().encode(), key=command.key())
            producer.flush(CONTROL_ACK_TIMEOUT_S)

        try:
            await asyncio.to_thread(send)
        except BusError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"the command was not recorded (Kafka): {exc}"
            ) from exc
        # Recorded in Kafka: when Redis does not answer, the executor projects it there once it does.
        with contextlib.suppress(StoreError):
            await store.set_halted(command.strategy_id, command.halted)
        return
    await store.set_halted(command.strategy_id, command.halted)


def create_api(
    settings: ApiSettings, store: Store, *, bus: Bus | None = None, close_store: bool = True
) -> FastAPI:
    """The API over `store`; with `bus`, halt and resume are recorded on `strategy-control` first."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if app.state.control_producer is not None:
            await asyncio.to_thread(app.state.control_producer.close)
        if close_store:
            await store.close()

    app = create_service_app(settings, readiness_checks={"store": store.ping}, lifespan=lifespan)
    app.title = "tradebot API"
    app.state.store = store
    app.state.bus = bus
    app.state.topic_partitions = settings.topic_partitions
    app.state.control_producer = None if bus is None else bus.producer(f"{settings.service_name}-control")
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
    _answer_errors_in_one_shape(app)
    return app


def _answer_errors_in_one_shape(app: FastAPI) -> None:
    """`ApiError` for every error: HTTP errors, invalid parameters (FastAPI's default is a list) and an
    unreachable store (a 500 before)."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            ApiError(detail=str(exc.detail)).model_dump(), status_code=exc.status_code, headers=exc.headers
        )

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"] if part != "query") or "request"
            problems.append(f"{where}: {error['msg']}")
        return JSONResponse(
            ApiError(detail="; ".join(problems)).model_dump(),
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            ApiError(detail=f"the store is unavailable: {exc}").model_dump(),
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StoreError, store_unavailable)
