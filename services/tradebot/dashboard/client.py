"""A small typed client for the tradebot HTTP API; the dashboard's only way to see the live pipeline.

Every failure (no connection, a timeout, a non-2xx answer, a body that is not JSON) raises
`ApiUnavailable` with a one-line message naming the URL and, for an HTTP error, the status and detail.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx

from tradebot.core.errors import TradebotError

__all__ = ["ApiClient", "ApiUnavailable"]

Json = dict[str, Any]


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
        self, method: str, path: str, *, params: dict[str, Any] | None = None, token: str | None = None
    ) -> Json:
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
            body = response.json()
        except ValueError:
            raise ApiUnavailable(f"the tradebot API at {url} answered something that is not JSON") from None
        if not isinstance(body, dict):
            raise ApiUnavailable(f"the tradebot API at {url} answered an unexpected body (not an object)")
        return body

    def _items(self, path: str, params: dict[str, Any] | None = None) -> list[Json]:
        items = self._request("GET", path, params=params).get("items", [])
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    # -- reads ---------------------------------------------------------------------------------------
    def strategies(self) -> list[Json]:
        return self._items("/strategies")

    def _log(
        self,
        path: str,
        strategy: str | None,
        symbol: str | None,
        limit: int,
        order: Literal["asc", "desc"],
    ) -> list[Json]:
        params = {"strategy": strategy, "symbol": symbol, "limit": max(1, min(limit, 1000)), "order": order}
        return self._items(path, params)

    def orders(
        self,
        strategy: str | None = None,
        symbol: str | None = None,
        *,
        limit: int = 100,
        order: Literal["asc", "desc"] = "desc",
    ) -> list[Json]:
        return self._log("/orders", strategy, symbol, limit, order)

    def fills(
        self,
        strategy: str | None = None,
        symbol: str | None = None,
        *,
        limit: int = 100,
        order: Literal["asc", "desc"] = "desc",
    ) -> list[Json]:
        return self._log("/fills", strategy, symbol, limit, order)

    def signals(
        self,
        strategy: str | None = None,
        symbol: str | None = None,
        *,
        limit: int = 100,
        order: Literal["asc", "desc"] = "desc",
    ) -> list[Json]:
        return self._log("/signals", strategy, symbol, limit, order)

    def positions(self, strategy: str | None = None) -> list[Json]:
        return self._items("/positions", {"strategy": strategy})

    def pnl(self) -> list[Json]:
        return self._items("/pnl")

    def equity(self, strategy: str, *, limit: int = 1000) -> list[Json]:
        points = self._request("GET", "/equity", params={"strategy": strategy, "limit": limit}).get(
            "points", []
        )
        return [p for p in points if isinstance(p, dict)] if isinstance(points, list) else []

    def last_prices(self) -> list[Json]:
        return self._items("/prices")

    def price_history(self, symbol: str, *, limit: int = 1000) -> list[Json]:
        body = self._request("GET", f"/prices/{quote(symbol, safe='')}", params={"limit": limit})
        points = body.get("points", [])
        return [p for p in points if isinstance(p, dict)] if isinstance(points, list) else []

    # -- control -------------------------------------------------------------------------------------
    def halt(self, strategy_id: str, token: str | None = None) -> Json:
        return self._control(strategy_id, "halt", token)

    def resume(self, strategy_id: str, token: str | None = None) -> Json:
        return self._control(strategy_id, "resume", token)

    def _control(self, strategy_id: str, action: str, token: str | None) -> Json:
        token = token or self.token
        if not token:
            raise ApiUnavailable(f"{action} needs the API token (TRADEBOT_API_TOKEN)", status=401)
        return self._request("POST", f"/strategies/{quote(strategy_id, safe='')}/{action}", token=token)


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
