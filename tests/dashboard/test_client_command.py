"""The API client's errors and the `tradebot dashboard` command's plumbing, without servers."""

from __future__ import annotations

import argparse
import signal

import httpx
import pytest

from tests.plugins._proc import free_port
from tradebot.dashboard import command
from tradebot.dashboard.client import ApiClient, ApiUnavailable
from tradebot.dashboard.live import equity_frame, markers, moving_averages


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


def test_reads_pass_the_filters_and_unwrap_items() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"items": [{"id": "a"}], "next_cursor": None})

    with _client(httpx.MockTransport(handler)) as api:
        assert api.orders("sma-fast", "GOOG", limit=5000) == [{"id": "a"}]
    assert dict(seen[0].params) == {
        "strategy": "sma-fast",
        "symbol": "GOOG",
        "limit": "1000",
        "order": "desc",
    }


def test_halt_without_a_token_is_refused_locally() -> None:
    with ApiClient("http://api.test") as api, pytest.raises(ApiUnavailable, match="needs the API token"):
        api.halt("sma-fast")


def test_moving_averages_match_the_strategy_windows() -> None:
    short, long_ = moving_averages([1.0, 2.0, 3.0, 4.0], "sma", 2, 3)
    assert short[1:] == [1.5, 2.5, 3.5]
    assert long_[2:] == [2.0, 3.0]


def test_markers_and_equity_frames() -> None:
    orders = [
        {
            "id": "o1",
            "ts": "2024-01-01T00:00:00Z",
            "reason": "entry_long",
            "side": "buy",
            "qty": 1,
            "ref_price": 10.0,
        },
        {
            "id": "o2",
            "ts": "2024-01-02T00:00:00Z",
            "reason": "stop_loss",
            "side": "sell",
            "qty": 1,
            "ref_price": 9.0,
        },
        {
            "id": "o3",
            "ts": "2024-01-03T00:00:00Z",
            "reason": "entry_long",
            "side": "buy",
            "qty": 1,
            "ref_price": 9.5,
        },
    ]
    fills = [
        {"order_id": "o1", "status": "filled", "price": 10.1},
        {"order_id": "o2", "status": "filled", "price": 8.9},
        {"order_id": "o3", "status": "rejected", "price": 0.0},
    ]
    frame = markers(orders, fills)
    assert frame["kind"].tolist() == ["entry long", "stop-out", "rejected"]
    assert frame["price"].tolist() == [10.1, 8.9, 9.5]
    equity = equity_frame(
        [{"ts": "2024-01-01T00:00:00Z", "equity": 100.0}, {"ts": "2024-01-02T00:00:00Z", "equity": 90.0}], "s"
    )
    assert equity["drawdown_pct"].round(6).tolist() == [0.0, -10.0]


def test_the_command_runs_streamlit_headless_on_the_given_port() -> None:
    parser = argparse.ArgumentParser()
    command.build_parser(parser)
    args = parser.parse_args([])
    assert (args.port, args.host) == (8501, "127.0.0.1")
    argv = command.streamlit_argv("0.0.0.0", 9000)
    assert argv[1:4] == ["-m", "streamlit", "run"]
    assert argv[4].endswith("dashboard/app.py")
    joined = " ".join(argv)
    for option in (
        "--server.port 9000",
        "--server.address 0.0.0.0",
        "--server.headless true",
        "--browser.gatherUsageStats false",
    ):
        assert option in joined
    assert command._signal_of("signal SIGINT") is signal.SIGINT
    assert command._signal_of("main returned") is signal.SIGTERM
    assert command._exit_code(-15) == 143
