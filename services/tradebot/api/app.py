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
import json
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, SecretStr, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from tradebot.adapters.bus import Bus, BusError, Producer
from tradebot.adapters.connect import PipelineSettings
from tradebot.adapters.store import CURSOR_PATTERN, Store, StoreError
from tradebot.adapters.store import Page as StorePage
from tradebot.adapters.store import Query as StoreQuery
from tradebot.adapters.topics import (
    COMMAND_ID_PATTERN,
    COMMANDS,
    CONTROL,
    ExitCommand,
    HaltCommand,
    pipeline_topics,
)
from tradebot.core.cockpit import (
    ClosedTrade,
    EventKind,
    EventList,
    Execution,
    MarkedEquity,
    OpenTrade,
    StrategyEvent,
    SummaryList,
    Trades,
    combined,
    fill_event,
    marked_equity,
    profit_by,
    summary,
    trades,
    with_drawdown,
)
from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.models import (
    ENTRY_REASONS,
    ClosedBar,
    Fill,
    FillStatus,
    OrderRequest,
    Position,
    Signal,
    order_id,
)
from tradebot.core.params import StrategyParams
from tradebot.core.views import (
    BarPage,
    EquityCurve,
    EquityPoint,
    ExitOrder,
    ExitRequested,
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

logger = logging.getLogger(__name__)

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


@dataclass
class _Kept:
    changes: int | None  # the store's change count read before the answer was made
    state: object
    body: bytes


class AnswerCache:
    """Answers of the read routes, as JSON, each kept with the state of the store it was made from (the newest
    entry of each log it reads: the logs only change by appends, which also do their trimming), so a
    dashboard's refresh over an unchanged store costs one read (issue 17.6: 50 dashboards each asked for 1 MB
    of prices, orders and fills every 2 s). First the store's change count (`Store.changes`): unchanged since
    the answer was made, nothing it was made of changed. Else the route's own state, a few one-entry reads:
    unchanged, the answer stands (a tick moves the count but not the order log). The newest `size` URLs are
    kept, `max_bytes` in all; a miss is made once however many requests wait for it. The cockpit's routes keep
    theirs here too, with the books they were made from as their state."""

    def __init__(self, size: int = 256, max_bytes: int = 48 * 2**20) -> None:
        self._size = size
        # The chart gives the API 384 MiB: a /market answer can be 1 MB, so the bytes kept are bounded too.
        self._max_bytes = max_bytes
        self._bytes = 0
        self._answers: OrderedDict[str, _Kept] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def answer(
        self,
        url: str,
        changes: int | None,
        state: Callable[[], Awaitable[object]],
        build: Callable[[], Awaitable[BaseModel]],
    ) -> Response:
        hit = self._answers.get(url)
        if hit is None or changes is None or hit.changes != changes:
            async with self._locks.setdefault(url, asyncio.Lock()):
                hit = self._answers.get(url)
                if hit is None or changes is None or hit.changes != changes:
                    # Read before making the answer: a write meanwhile moves the count past what is kept.
                    now = await state()
                    if hit is None or hit.state != now:
                        body = (await build()).model_dump_json().encode()
                        self._bytes += len(body) - (len(hit.body) if hit is not None else 0)
                        hit = _Kept(changes, now, body)
                    else:
                        hit = _Kept(changes, now, hit.body)
                    self._answers[url] = hit
        self._answers.move_to_end(url)
        while len(self._answers) > self._size or (self._bytes > self._max_bytes and len(self._answers) > 1):
            old, kept = self._answers.popitem(last=False)
            self._bytes -= len(kept.body)
            self._locks.pop(old, None)
        return Response(hit.body, media_type="application/json")


async def _newest(fetch: Callable[[StoreQuery], Awaitable[StorePage]]) -> str:
    """The newest entry of a log and its id (the id alone is unknown when it is the only entry)."""
    page = await fetch(StoreQuery(limit=1))
    return json.dumps([page.items, page.next_cursor], default=str)


async def _answer(
    request: Request,
    store: Store,
    state: Callable[[], Awaitable[object]],
    build: Callable[[], Awaitable[BaseModel]],
) -> Response:
    cache: AnswerCache = request.app.state.answers
    return await cache.answer(str(request.url), await store.changes(), state, build)


router = APIRouter(responses=READ_ERRORS, dependencies=[Depends(_one_value_each)])


@router.get("/", tags=["meta"], summary="Welcome")
async def welcome() -> Welcome:
    return Welcome(message="Welcome to tradebot", docs="/docs", health="/health")


@router.get("/health", tags=["meta"], summary="Health, as the first version promised")
async def health() -> Health:
    return Health(status="ok")


@router.get("/orders", tags=["trading"], summary="The order log", response_model=OrderPage)
async def orders(request: Request, store: StoreDep, params: QueryDep) -> Response:
    async def build() -> OrderPage:
        items, cursor = await _records(store.orders, params.to_store(), OrderRequest)
        return OrderPage(items=items, next_cursor=cursor)

    return await _answer(request, store, lambda: _newest(store.orders), build)


@router.get("/fills", tags=["trading"], summary="Fills and refusals", response_model=FillPage)
async def fills(request: Request, store: StoreDep, params: QueryDep) -> Response:
    async def build() -> FillPage:
        items, cursor = await _records(store.fills, params.to_store(), Fill)
        return FillPage(items=items, next_cursor=cursor)

    return await _answer(request, store, lambda: _newest(store.fills), build)


@router.get("/signals", tags=["trading"], summary="Moving-average crosses")
async def signals(store: StoreDep, params: QueryDep) -> SignalPage:
    items, cursor = await _records(store.signals, params.to_store(), Signal)
    return SignalPage(items=items, next_cursor=cursor)


# The bar timeframes of `tradebot.core.bars.TIMEFRAMES` (tests/services/test_api.py holds them equal).
BarTimeframe = Literal[
    "1s", "5s", "15s", "30s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"
]


@router.get("/bars", tags=["trading"], summary="Closed bars of a timeframe (candles)", response_model=BarPage)
async def bars(
    request: Request,
    store: StoreDep,
    params: QueryDep,
    timeframe: Annotated[
        BarTimeframe, Query(description="The bars' timeframe, as the strategies' `timeframe`.")
    ],
) -> Response:
    """Bars the strategies built from ticks and closed, newest first by default (`order=asc` for a chart);
    `since` and `until` on the bars' open time; `strategy` the publisher."""

    def log(query: StoreQuery) -> Awaitable[StorePage]:
        return store.bars(timeframe, query)

    async def build() -> BarPage:
        items, cursor = await _records(log, params.to_store(), ClosedBar)
        return BarPage(items=items, next_cursor=cursor)

    return await _answer(request, store, lambda: _newest(log), build)


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


# The most orders and fills of one strategy the trade, summary and marked-equity routes read (the oldest
# beyond are left out, and the routes say so in their descriptions); prices: the store keeps 5,000 a symbol.
MAX_EXECUTIONS = 20_000
PRICE_POINTS = 5000


async def _log(fetch: Callable[[StoreQuery], Awaitable[StorePage]], strategy: str) -> list[dict[str, Any]]:
    """The newest MAX_EXECUTIONS entries of a log for one strategy, oldest first."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < MAX_EXECUTIONS:
        page = await fetch(StoreQuery(strategy_id=strategy, limit=1000, cursor=cursor, newest_first=True))
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return items[:MAX_EXECUTIONS][::-1]


@dataclass
class _Book:
    """One strategy's record, read once per request, and what core.cockpit makes of it."""

    info: dict[str, Any]
    initial_cash: float
    open: list[OpenTrade]
    closed: list[ClosedTrade]
    curve: list[tuple[datetime, float]]
    realized: float
    unrealized: float
    exposure: float
    # What the trades and the curve were made from: equal for two books, equal trades and curves.
    made_from: object = None


@dataclass
class _Cached:
    """What a strategy's book is made of besides its positions, and what it was made from: the newest order and
    fill of the logs and the strategy's registration (`executions`), then its symbols' newest prices (`made`)."""

    logs: tuple[str, str]
    executions: list[Execution]
    made: tuple[object, tuple[list[OpenTrade], list[ClosedTrade], list[tuple[datetime, float]]]] | None = None


class BookCache:
    """The cockpit routes' books, per strategy, valid while nothing they are made of changed (issue 17.6: each
    refresh of each dashboard reread up to 20,000 orders and fills a strategy). Checked on every request with
    cheap reads: the newest entry of the orders and fills logs (any append, or a trim, which only an append
    does, changes it) and each symbol's newest price and last price. A miss is made once however many requests
    wait for it, and one at a time: a cold book parses 40,000 entries."""

    def __init__(self) -> None:
        self._books: dict[str, _Cached] = {}
        self._making = asyncio.Lock()

    async def book(
        self,
        store: Store,
        info: dict[str, Any],
        last: dict[str, tuple[float, datetime]],
        logs: tuple[str, str],
    ) -> _Book:
        sid = str(info["id"])
        logs = (logs[0], logs[1] + json.dumps(info, sort_keys=True, default=str))
        cached = self._books.get(sid)
        if cached is None or cached.logs != logs:
            async with self._making:
                cached = self._books.get(sid)
                if cached is None or cached.logs != logs:
                    cached = _Cached(logs=logs, executions=await _executions(store, sid))
                    self._books[sid] = cached
        symbols = sorted({str(s) for s in info.get("symbols", [])} | {ex.symbol for ex in cached.executions})
        newest = await asyncio.gather(*(store.prices(symbol, 1) for symbol in symbols))
        prices = (logs, tuple((symbol, (newest[i], last.get(symbol))) for i, symbol in enumerate(symbols)))
        if cached.made is None or cached.made[0] != prices:
            async with self._making:
                if cached.made is None or cached.made[0] != prices:
                    histories = await asyncio.gather(
                        *(store.prices(symbol, PRICE_POINTS) for symbol in symbols)
                    )
                    history = dict(zip(symbols, histories, strict=True))
                    made = await asyncio.to_thread(_made_of, info, cached.executions, last, history)
                    cached.made = (prices, made)
        made_from, (open_trades, closed, curve) = cached.made
        positions = await _marked_positions(store, sid, None)
        return _Book(
            info=info,
            initial_cash=float(info.get("initial_cash") or DEFAULT_INITIAL_CASH),
            open=open_trades,
            closed=closed,
            curve=curve,
            realized=sum(p.realized_pnl - p.commissions for p in positions),
            unrealized=sum(p.unrealized_pnl for p in positions),
            exposure=sum(abs(p.qty) * p.last_price for p in positions),
            made_from=made_from,
        )


async def _executions(store: Store, sid: str) -> list[Execution]:
    """The strategy's filled orders, at their event time, oldest first (its newest MAX_EXECUTIONS)."""
    orders_log, fills_log = await asyncio.gather(_log(store.orders, sid), _log(store.fills, sid))
    # Seconds of parsing for 40,000 entries: in a thread, so the loop still reads other requests' answers
    # (blocked, their Redis reads timed out and answered 503).
    return await asyncio.to_thread(_filled, orders_log, fills_log)


def _filled(orders_log: list[dict[str, Any]], fills_log: list[dict[str, Any]]) -> list[Execution]:
    sent = {str(o["id"]): OrderRequest.model_validate(o, strict=False) for o in orders_log}
    executions = []
    for item in fills_log:
        fill = Fill.model_validate(item, strict=False)
        if fill.status is not FillStatus.FILLED:
            continue
        order = sent.get(fill.order_id)
        executions.append(
            Execution(
                symbol=fill.symbol,
                side=fill.side.sign,
                qty=fill.qty,
                price=fill.price,
                commission=fill.commission,
                # Event time: the price the strategy acted on (the fill's own is the executor's clock).
                ts=order.ts if order is not None else fill.ts,
                reason=fill.reason,
            )
        )
    executions.sort(key=lambda ex: ex.ts)
    return executions


def _made_of(
    info: dict[str, Any],
    executions: list[Execution],
    last: dict[str, tuple[float, datetime]],
    prices: dict[str, list[tuple[datetime, float]]],
) -> tuple[list[OpenTrade], list[ClosedTrade], list[tuple[datetime, float]]]:
    """Open and closed trades and the marked equity curve of one strategy (core.cockpit)."""
    sid = str(info["id"])
    params = StrategyParams.model_validate(info["params"]) if info.get("params") else None
    initial_cash = float(info.get("initial_cash") or DEFAULT_INITIAL_CASH)
    open_trades, closed = trades(sid, executions, last, params)
    # The trailing stop's reference: the best price since entry.
    if params is not None and params.trailing_stop_pct is not None:
        best = {}
        for trade in open_trades:
            since = [price for ts, price in prices.get(trade.symbol, []) if ts >= trade.entry_ts] or [
                trade.entry_price
            ]
            best[trade.symbol] = max(since) if trade.side == "long" else min(since)
        open_trades, _ = trades(sid, executions, last, params, best)
    return open_trades, closed, marked_equity(initial_cash, executions, prices)


def _cache(request: Request) -> BookCache:
    cache: BookCache = request.app.state.books
    return cache


async def _book_answer(
    request: Request,
    store: Store,
    strategy: str | None,
    build: Callable[[list[_Book]], BaseModel],
    *,
    marked: bool,
    known: bool = True,
) -> Response:
    """The JSON of `build(books)`, kept in the answer cache while none of the books was made again (and, when
    `marked`, while no position's P&L moved): serialising a strategy's closed trades took most of a request.
    `known`: an unknown `strategy` answers 404 (else no books)."""
    books: list[_Book] = []

    async def state() -> object:
        books[:] = await _books(request, store, strategy)
        if known and strategy is not None and not books:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no strategy {strategy!r}")
        return tuple((b.made_from, (b.realized, b.unrealized, b.exposure) if marked else None) for b in books)

    async def made() -> BaseModel:
        return build(books)

    return await _answer(request, store, state, made)


async def _books(request: Request, store: Store, strategy: str | None) -> list[_Book]:
    registered = [s for s in await store.strategies() if strategy is None or s["id"] == strategy]
    last, newest_order, newest_fill = await asyncio.gather(
        store.last_prices(), _newest(store.orders), _newest(store.fills)
    )
    cache = _cache(request)
    logs = (newest_order, newest_fill)
    return list(await asyncio.gather(*(cache.book(store, info, last, logs) for info in registered)))


@router.get(
    "/trades",
    tags=["trading"],
    summary="Open and closed trades, profit per symbol and per day",
    response_model=Trades,
)
async def trade_list(
    request: Request,
    store: StoreDep,
    strategy: str | None = None,
    symbol: Annotated[str | None, Query(description="Only this symbol's trades (and profit).")] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_EXECUTIONS, description="At most this many closed trades, newest first."),
    ] = None,
) -> Response:
    """Each position from flat to flat is a trade, its time the event time of its orders; flat positions
    are not open trades. From each strategy's newest 20,000 orders and fills. `limit` pages the closed trades
    (a busy strategy's are megabytes; `closed_total` counts them all); the profit per symbol and per day is
    over all of them (of `symbol`, when given)."""

    def build(books: list[_Book]) -> Trades:
        closed = sorted(
            (t for b in books for t in b.closed if symbol is None or t.symbol == symbol),
            key=lambda t: t.exit_ts,
            reverse=True,
        )
        return Trades(
            open=[t for b in books for t in b.open if symbol is None or t.symbol == symbol],
            closed=closed[:limit],
            closed_total=len(closed),
            by_symbol=profit_by(closed, "symbol"),
            by_day=profit_by(closed, "day"),
        )

    return await _book_answer(request, store, strategy, build, marked=False, known=False)


@router.get(
    "/summary",
    tags=["trading"],
    summary="Per strategy and in total: equity, P&L, drawdown, trade statistics",
    response_model=SummaryList,
)
async def summary_list(request: Request, store: StoreDep) -> Response:
    """P&L in currency and in percent of the initial cash; drawdown of the equity marked at every price."""

    def build(books: list[_Book]) -> SummaryList:
        items = [
            summary(
                str(b.info["id"]), b.initial_cash, b.realized, b.unrealized, b.exposure, b.curve, b.closed
            )
            for b in books
        ]
        total = summary(
            "total",
            sum(b.initial_cash for b in books),
            sum(b.realized for b in books),
            sum(b.unrealized for b in books),
            sum(b.exposure for b in books),
            combined([(b.initial_cash, b.curve) for b in books]),
            [t for b in books for t in b.closed],
        )
        return SummaryList(items=items, total=total)

    return await _book_answer(request, store, None, build, marked=True)


@router.get(
    "/equity/marked",
    tags=["trading"],
    summary="A strategy's equity marked at every price, with drawdown",
    responses={404: _error("No such strategy")},
    response_model=MarkedEquity,
)
async def equity_marked(request: Request, store: StoreDep, strategy: str) -> Response:
    """Cash plus open positions at every price point of the strategy's symbols (the newest 5,000 of each):
    the curve a backtest of the same prices draws."""

    def build(books: list[_Book]) -> MarkedEquity:
        return MarkedEquity(strategy_id=strategy, points=with_drawdown(books[0].curve))

    return await _book_answer(request, store, strategy, build, marked=False)


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
    response_model=MarketActivity,
)
async def market(
    request: Request,
    store: StoreDep,
    symbol: Annotated[list[str], Query(min_length=1, max_length=MAX_MARKET_SYMBOLS)],
    strategy: str | None = None,
    points: int = Query(default=1000, ge=1, le=5000, description="Prices per symbol, the newest ones."),
    limit: int = Query(default=1000, ge=1, le=1000, description="Orders and fills per symbol, newest first."),
) -> Response:
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

    async def build() -> MarketActivity:
        return MarketActivity(items=list(await asyncio.gather(*(one(sym) for sym in symbol))))

    async def state() -> object:
        newest = (store.prices(sym, 1) for sym in symbol)
        return await asyncio.gather(_newest(store.orders), _newest(store.fills), *newest)

    return await _answer(request, store, state, build)


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
    await _event(store, strategy_id, "halt", None, "halted: no new entries")
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
    await _event(store, strategy_id, "resume", None, "resumed: entries allowed")
    return HaltState(id=strategy_id, halted=False)


CommandIdQuery = Annotated[
    str | None,
    Query(
        pattern=COMMAND_ID_PATTERN,
        description="An idempotency key: a request repeated with the same key makes no second order "
        "(without one, a new key is drawn; a repeat then finds the position already closed).",
    ),
]


async def _exit(
    request: Request, store: Store, strategy_id: str, symbol: str | None, command_id: str | None
) -> ExitRequested:
    registered = {s["id"]: s for s in await store.strategies()}
    if strategy_id not in registered:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no strategy {strategy_id!r}")
    symbols = [str(name) for name in registered[strategy_id].get("symbols", [])]
    if symbol is not None and symbol not in symbols:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"strategy {strategy_id!r} does not trade {symbol!r}")
    command = ExitCommand(
        command_id=command_id or uuid.uuid4().hex,
        strategy_id=strategy_id,
        symbol=symbol,
        ts=datetime.now(UTC),
    )
    if not await _send(request, COMMANDS, command.model_dump_json().encode(), command.key()):
        # Without Kafka nothing reads a command: refuse rather than pretend.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "force-exit needs Kafka (the API runs without it)"
        )
    targets = symbols if symbol is None else [symbol]
    open_in = {p.symbol for p in await store.positions(strategy_id) if p.qty != 0.0}
    entries = {s: await _entry_order(store, strategy_id, s) for s in targets if s in open_in}
    what = f"force-exit of {symbol}" if symbol else "close-all"
    await _event(
        store, strategy_id, "force-exit-request", symbol, f"{what} requested (command {command.command_id})"
    )
    return ExitRequested(
        strategy_id=strategy_id,
        symbol=symbol,
        command_id=command.command_id,
        orders=[
            ExitOrder(symbol=s, order_id=order_id(strategy_id, s, command.cause(entry)))
            for s, entry in entries.items()
        ],
    )


ENTRY_REASON_VALUES = frozenset(reason.value for reason in ENTRY_REASONS)


async def _entry_order(store: Store, strategy_id: str, symbol: str) -> str:
    """The id of the order that opened the open position in `symbol`: the newest filled entry (the
    strategy keys its force-exit order by it). Empty when none is in the fills log's newest page."""
    query = StoreQuery(strategy_id=strategy_id, symbol=symbol, limit=1000, newest_first=True)
    for item in (await store.fills(query)).items:
        if item.get("reason") in ENTRY_REASON_VALUES and item.get("status", "filled") == "filled":
            return str(item["order_id"])
    return ""


@router.post(
    "/strategies/{strategy_id}/positions/{symbol}/exit",
    tags=["strategies"],
    summary="Force-exit one open trade at the last price (needs the token)",
    responses=CONTROL_ERRORS,
)
async def force_exit(
    request: Request,
    store: StoreDep,
    strategy_id: str,
    symbol: str,
    _: AuthDep,
    command_id: CommandIdQuery = None,
) -> ExitRequested:
    return await _exit(request, store, strategy_id, symbol, command_id)


@router.post(
    "/strategies/{strategy_id}/close-all",
    tags=["strategies"],
    summary="Force-exit every open trade of a strategy (needs the token)",
    responses=CONTROL_ERRORS,
)
async def close_all(
    request: Request, store: StoreDep, strategy_id: str, _: AuthDep, command_id: CommandIdQuery = None
) -> ExitRequested:
    return await _exit(request, store, strategy_id, None, command_id)


async def _event(store: Store, strategy_id: str, kind: EventKind, symbol: str | None, message: str) -> None:
    """A command given, recorded: one structured log line, and an entry of the store's event log (best effort:
    the command itself is on Kafka already)."""
    event = StrategyEvent(
        ts=datetime.now(UTC), strategy_id=strategy_id, kind=kind, symbol=symbol, message=message
    )
    logger.info(message, extra={"event": kind, "strategy": strategy_id, "symbol": symbol})
    with contextlib.suppress(StoreError):
        await store.append_event(event)


@router.get(
    "/events",
    tags=["strategies"],
    summary="A strategy's events: entries, exits, stop-outs, refusals, halts, force-exits",
    response_model=EventList,
)
async def events(
    request: Request,
    store: StoreDep,
    strategy: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000, description="The newest events, at most this many."),
) -> Response:
    """Fills and refusals (at their orders' event time) merged with the commands given (at the time given)."""

    async def build() -> EventList:
        query = StoreQuery(strategy_id=strategy, limit=limit)
        (sent, _), (filled, _), (given, _) = await asyncio.gather(
            _records(store.orders, query, OrderRequest),
            _records(store.fills, query, Fill),
            _records(store.events, query, StrategyEvent),
        )
        times = {order.id: order.ts for order in sent}
        merged = [*given, *(fill_event(fill, times.get(fill.order_id, fill.ts)) for fill in filled)]
        merged.sort(key=lambda event: event.ts, reverse=True)
        return EventList(items=merged[:limit])

    async def state() -> object:
        return await asyncio.gather(_newest(store.orders), _newest(store.fills), _newest(store.events))

    return await _answer(request, store, state, build)


# How long a halt or resume waits for Kafka's acknowledgement before it answers 503 (not recorded).
CONTROL_ACK_TIMEOUT_S = 10.0


async def _send(request: Request, topic: str, value: bytes, key: bytes) -> bool:
    """Records `value` on `topic` and returns once Kafka acknowledged it (503 when it did not); False
    without a bus (tests of the API alone)."""
    producer: Producer | None = request.app.state.control_producer
    bus: Bus | None = request.app.state.bus
    if producer is None or bus is None:
        return False
    partitions: int = request.app.state.topic_partitions

    def send() -> None:
        # Created here, not at start-up: the API's reads must not wait for Kafka. Never left to the
        # broker's auto-creation, which would make the topic uncompacted.
        bus.ensure_topics(pipeline_topics(partitions))
        producer.produce(topic, value, key=key)
        producer.flush(CONTROL_ACK_TIMEOUT_S)

    try:
        await asyncio.to_thread(send)
    except BusError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the command was not recorded (Kafka): {exc}"
        ) from exc
    return True


async def _command(request: Request, store: Store, command: HaltCommand) -> None:
    """Records the command on `strategy-control` (the executor's source of truth, so a halt holds even
    when Redis loses it) and answers only once Kafka acknowledged it; then mirrors it to Redis for
    readers. Without a bus (tests of the API alone) only Redis is written."""
    if await _send(request, CONTROL, command.model_dump_json().encode(), command.key()):
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
    app.state.books = BookCache()
    app.state.answers = AnswerCache()
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
