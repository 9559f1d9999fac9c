"""A small typed client for the tradebot HTTP API; the dashboard's only way to see the live pipeline.

Every answer is parsed into the API's own response model (`tradebot.core.views`). Every failure (no
connection, a timeout, a non-2xx answer, a body that does not fit the model) raises `ApiUnavailable` with a
one-line message naming the URL and, for an HTTP error, the status and detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from tradebot.core.cockpit import EventList, MarkedEquity, MarkedPoint, StrategyEvent, SummaryList, Trades
from tradebot.core.errors import TradebotError
from tradebot.core.models import Position
from tradebot.core.views import (
    BarPage,
    EquityCurve,
    EquityPoint,
    ExitRequested,
    FillPage,
    HaltState,
    LastPrice,
    LastPrices,
    MarketActivity,
    OrderPage,
    Page,
    PnlList,
    PositionList,
    PriceHistory,
    PricePoint,
    SignalPage,
    StrategyInfo,
    StrategyList,
    StrategyPnl,
    SymbolActivity,
)

__all__ = ["ApiClient", "ApiUnavailable"]

Answer = TypeVar("Answer", bound=BaseModel)
Record = TypeVar("Record", bound=BaseModel)
Order = Literal["asc", "desc"]
QueryValue = str | int | float | list[str] | None
# The API's logs: each read the same way, so one method (`ApiClient.log`) reads them all.
LOG_PATHS: dict[type[Page[Any]], str] = {OrderPage: "/orders", FillPage: "/fills", SignalPage: "/signals"}


class ApiUnavailable(TradebotError):  # noqa: N818 - the name says what the dashboard shows
    """The API could not answer; `message` says why in one line, `status` is the HTTP status if any.
    Retriable unless the API answered that the request itself is wrong (a 4xx)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retriable = status is None or status >= 500


class ApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token or None
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._timeout = timeout

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- plumbing ------------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        model: type[Answer],
        *,
        params: Mapping[str, QueryValue] | None = None,
        token: str | None = None,
    ) -> Answer:
        """One request, its answer parsed into `model` (the API's own response model)."""
        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, path, params=query, headers=headers)
        except httpx.TimeoutException:
            raise ApiUnavailable(
                f"the tradebot API at {self.base_url} did not answer within {self._timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiUnavailable(f"cannot reach the tradebot API at {self.base_url}: {reason}") from None
        if not response.is_success:
            raise ApiUnavailable(
                f"the tradebot API answered {response.status_code} to {method} {url}: {_detail(response)}",
                status=response.status_code,
            )
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ApiUnavailable(
                f"the tradebot API at {url} answered a body that is not a {model.__name__}: "
                f"{_first_problem(exc)}"
            ) from None

    # -- reads ---------------------------------------------------------------------------------------
    def strategies(self) -> list[StrategyInfo]:
        return self._request("GET", "/strategies", StrategyList).items

    def log(
        self,
        page: type[Page[Record]],
        strategy: str | None = None,
        symbol: str | None = None,
        *,
        limit: int = 100,
        order: Order = "desc",
    ) -> list[Record]:
        """The latest records of one of the API's logs, `OrderPage`, `FillPage` or `SignalPage` (newest
        first unless `order="asc"`), of one strategy and symbol or all; at most 1000."""
        params: dict[str, QueryValue] = {
            "strategy": strategy,
            "symbol": symbol,
            "limit": max(1, min(limit, 1000)),
            "order": order,
        }
        return self._request("GET", LOG_PATHS[page], page, params=params).items

    def positions(self, strategy: str | None = None) -> list[Position]:
        return self._request("GET", "/positions", PositionList, params={"strategy": strategy}).items

    def pnl(self) -> list[StrategyPnl]:
        return self._request("GET", "/pnl", PnlList).items

    def equity(self, strategy: str, *, limit: int = 1000) -> list[EquityPoint]:
        params: dict[str, QueryValue] = {"strategy": strategy, "limit": limit}
        return self._request("GET", "/equity", EquityCurve, params=params).points

    def summary(self) -> SummaryList:
        return self._request("GET", "/summary", SummaryList)

    def trades(
        self, strategy: str | None = None, symbol: str | None = None, *, limit: int | None = None
    ) -> Trades:
        """Open trades, the newest `limit` closed ones (all without it) and the profit tables."""
        params: dict[str, QueryValue] = {"strategy": strategy, "symbol": symbol, "limit": limit}
        return self._request("GET", "/trades", Trades, params=params)

    def events(self, strategy: str | None = None, *, limit: int = 100) -> list[StrategyEvent]:
        return self._request("GET", "/events", EventList, params={"strategy": strategy, "limit": limit}).items

    def equity_marked(self, strategy: str) -> list[MarkedPoint]:
        return self._request("GET", "/equity/marked", MarkedEquity, params={"strategy": strategy}).points

    def last_prices(self) -> list[LastPrice]:
        return self._request("GET", "/prices", LastPrices).items

    def price_history(self, symbol: str, *, limit: int = 1000) -> list[PricePoint]:
        path = f"/prices/{quote(symbol, safe='')}"
        return self._request("GET", path, PriceHistory, params={"limit": limit}).points

    def bars(self, symbol: str, timeframe: str, *, limit: int = 1000) -> BarPage:
        """The newest `limit` closed bars of `symbol` on `timeframe` (at most 1000, newest first);
        `next_cursor` is set when the API holds older ones."""
        params: dict[str, QueryValue] = {
            "symbol": symbol,
            "timeframe": timeframe,
            "limit": max(1, min(limit, 1000)),
            "order": "desc",
        }
        return self._request("GET", "/bars", BarPage, params=params)

    def market(
        self, symbols: Sequence[str], strategy: str | None = None, *, points: int = 1000, limit: int = 1000
    ) -> list[SymbolActivity]:
        """Prices, orders and fills of each symbol (of one strategy or all), in one request."""
        if not symbols:
            return []
        params: dict[str, QueryValue] = {
            "symbol": list(symbols),
            "strategy": strategy,
            "points": points,
            "limit": limit,
        }
        return self._request("GET", "/market", MarketActivity, params=params).items

    # -- control -------------------------------------------------------------------------------------
    def halt(self, strategy_id: str, token: str | None = None) -> HaltState:
        return self._control(strategy_id, "halt", token)

    def resume(self, strategy_id: str, token: str | None = None) -> HaltState:
        return self._control(strategy_id, "resume", token)

    def force_exit(
        self, strategy_id: str, symbol: str, command_id: str | None = None, token: str | None = None
    ) -> ExitRequested:
        """Closes one open trade; the same `command_id` again makes no second order."""
        path = f"/strategies/{quote(strategy_id, safe='')}/positions/{quote(symbol, safe='')}/exit"
        return self._post_command(path, "force-exit", command_id, token)

    def close_all(
        self, strategy_id: str, command_id: str | None = None, token: str | None = None
    ) -> ExitRequested:
        path = f"/strategies/{quote(strategy_id, safe='')}/close-all"
        return self._post_command(path, "close-all", command_id, token)

    def _post_command(
        self, path: str, action: str, command_id: str | None, token: str | None
    ) -> ExitRequested:
        token = token or self.token
        if not token:
            raise ApiUnavailable(f"{action} needs the API token (TRADEBOT_API_TOKEN)", status=401)
        return self._request("POST", path, ExitRequested, params={"command_id": command_id}, token=token)

    def _control(self, strategy_id: str, action: str, token: str | None) -> HaltState:
        token = token or self.token
        if not token:
            raise ApiUnavailable(f"{action} needs the API token (TRADEBOT_API_TOKEN)", status=401)
        path = f"/strategies/{quote(strategy_id, safe='')}/{action}"
        return self._request("POST", path, HaltState, token=token)


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:200] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)[:200]
    return str(body)[:200]
