"""The API client's errors and the `tradebot dashboard` command's plumbing, without servers."""

from __future__ import annotations

import argparse
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.plugins._proc import free_port
from tradebot.core.models import Fill, FillStatus, OrderReason, OrderRequest, Side
from tradebot.core.views import EquityPoint, FillPage, OrderPage, Page, SignalPage
from tradebot.dashboard import command
from tradebot.dashboard.client import ApiClient, ApiUnavailable
from tradebot.dashboard.live import equity_charts, equity_frame, markers, moving_averages


def _client(handler: httpx.MockTransport) -> ApiClient:
    return ApiClient("http://api.test", token="secret", transport=handler)


def test_connection_refused_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ApiClient(url, timeout=2.0) as api, pytest.raises(ApiUnavailable) as caught:
        api.strategies()
    assert caught.value.message.startswith(f"cannot reach the tradebot API at {url}")
    assert caught.value.status is None


def test_an_http_error_carries_status_and_detail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer secret"
        return httpx.Response(403, json={"detail": "the token is not valid"})

    with _client(httpx.MockTransport(handler)) as api, pytest.raises(ApiUnavailable) as caught:
        api.halt("sma-fast")
    assert caught.value.status == 403
    assert "403" in caught.value.message
    assert "POST http://api.test/strategies/sma-fast/halt" in caught.value.message
    assert "the token is not valid" in caught.value.message


ORDER = {
    "id": "o1",
    "strategy_id": "sma-fast",
    "symbol": "GOOG",
    "side": "buy",
    "qty": 1.0,
    "reason": "entry_long",
    "ref_price": 10.0,
    "ts": "2024-01-01T00:00:00Z",
    "cause": "tick:GOOG:1",
}


def test_reads_pass_the_filters_and_parse_the_models() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"items": [ORDER], "next_cursor": None})

    with _client(httpx.MockTransport(handler)) as api:
        (order,) = api.log(OrderPage, "sma-fast", "GOOG", limit=5000)
    assert isinstance(order, OrderRequest)
    assert (order.id, order.side, order.ts) == ("o1", Side.BUY, datetime(2024, 1, 1, tzinfo=UTC))
    assert dict(seen[0].params) == {
        "strategy": "sma-fast",
        "symbol": "GOOG",
        "limit": "1000",
        "order": "desc",
    }


@pytest.mark.parametrize(
    ("page", "path"), [(OrderPage, "/orders"), (FillPage, "/fills"), (SignalPage, "/signals")]
)
def test_each_log_is_read_from_its_own_route(page: type[Page[Any]], path: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    with _client(httpx.MockTransport(handler)) as api:
        assert api.log(page) == []
    assert seen == [path]


def test_a_body_that_does_not_fit_the_model_is_an_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": [{**ORDER, "side": "sideways"}], "next_cursor": None})

    with _client(httpx.MockTransport(handler)) as api, pytest.raises(ApiUnavailable) as caught:
        api.log(OrderPage)
    assert "answered a body that is not a OrderPage" in caught.value.message
    assert "items.0.side" in caught.value.message


def test_market_asks_once_for_every_symbol() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        symbols = request.url.params.get_list("symbol")
        items = [{"symbol": s, "prices": [], "orders": [ORDER], "fills": []} for s in symbols]
        return httpx.Response(200, json={"items": items})

    with _client(httpx.MockTransport(handler)) as api:
        activity = api.market(["GOOG", "AAPL", "MSFT"], "sma-fast", points=50, limit=20)
        assert api.market([]) == []
    assert [a.symbol for a in activity] == ["GOOG", "AAPL", "MSFT"]
    assert activity[0].orders[0].id == "o1"
    (url,) = seen
    assert url.path == "/market"
    assert url.params.get_list("symbol") == ["GOOG", "AAPL", "MSFT"]
    assert (url.params["strategy"], url.params["points"], url.params["limit"]) == ("sma-fast", "50", "20")


def test_halt_without_a_token_is_refused_locally() -> None:
    with ApiClient("http://api.test") as api, pytest.raises(ApiUnavailable, match="needs the API token"):
        api.halt("sma-fast")


def test_moving_averages_match_the_strategy_windows() -> None:
    short, long_ = moving_averages([1.0, 2.0, 3.0, 4.0], "sma", 2, 3)
    assert short[1:] == [1.5, 2.5, 3.5]
    assert long_[2:] == [2.0, 3.0]


def test_markers_and_equity_frames() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    orders = [
        OrderRequest.model_validate({**ORDER, "id": "o1"}, strict=False),
        OrderRequest.model_validate(
            {**ORDER, "id": "o2", "reason": "stop_loss", "side": "sell", "ref_price": 9.0}, strict=False
        ),
        OrderRequest.model_validate({**ORDER, "id": "o3", "ref_price": 9.5}, strict=False),
    ]
    orders = [o.model_copy(update={"ts": t0 + timedelta(days=i)}) for i, o in enumerate(orders)]
    fills = [
        Fill(
            order_id=order.id, strategy_id="sma-fast", symbol="GOOG", side=order.side, qty=1.0, price=price,
            ts=order.ts, reason=order.reason,
        )
        for order, price in ((orders[0], 10.1), (orders[1], 8.9))
    ]  # fmt: skip
    fills.append(
        Fill(
            order_id="o3", strategy_id="sma-fast", symbol="GOOG", side=Side.BUY, qty=0.0, price=0.0, ts=t0,
            reason=OrderReason.ENTRY_LONG, status=FillStatus.REJECTED, reject_reason="halted",
        )
    )  # fmt: skip
    frame = markers(orders, fills)
    assert frame["kind"].tolist() == ["entry long", "stop-out", "rejected"]
    assert frame["price"].tolist() == [10.1, 8.9, 9.5]
    equity = equity_frame(
        [EquityPoint(ts=t0, equity=100.0), EquityPoint(ts=t0 + timedelta(days=1), equity=90.0)], "s"
    )
    assert equity["drawdown_pct"].round(6).tolist() == [0.0, -10.0]


def test_the_equity_axis_shows_currency_amounts() -> None:
    # A flat curve near 10,000 read ".500 .500 .500" with Vega's default SI format.
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    frame = equity_frame([EquityPoint(ts=t0 + timedelta(minutes=i), equity=10_000.5) for i in range(3)], "s")
    equity_chart, _ = equity_charts(frame)
    assert equity_chart.to_dict()["encoding"]["y"]["axis"]["format"] == ",.2f"


def test_the_command_runs_streamlit_headless_on_the_given_port() -> None:
    parser = argparse.ArgumentParser()
    command.build_parser(parser)
    args = parser.parse_args([])
    assert (args.port, args.host) == (8501, "127.0.0.1")
    argv = command.streamlit_argv("0.0.0.0", 9000, 32)
    assert argv[1:4] == ["-m", "streamlit", "run"]
    assert argv[4].endswith("dashboard/app.py")
    joined = " ".join(argv)
    for option in (
        "--server.port 9000",
        "--server.address 0.0.0.0",
        "--server.headless true",
        "--browser.gatherUsageStats false",
        "--server.maxUploadSize 32",  # TRADEBOT_UPLOAD_MAX_MB: Streamlit refuses a larger file itself
    ):
        assert option in joined
    assert command._signal_of("signal SIGINT") is signal.SIGINT
    assert command._signal_of("main returned") is signal.SIGTERM
    assert command._exit_code(-15) == 143
