"""The Live page under `AppTest`, against a real API serving a replayed GOOG series."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import API_TOKEN, APP_PATH
from tests.plugins._proc import free_port

TIMEOUT_S = 30.0


def _live(env: pytest.MonkeyPatch, url: str, token: str | None) -> AppTest:
    env.setenv("TRADEBOT_API_URL", url)
    if token is not None:
        env.setenv("TRADEBOT_API_TOKEN", token)
    at = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT_S).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _table(at: AppTest, column: str) -> pd.DataFrame:
    """The first dataframe on the page with `column` (orders: ref_price; fills: reject_reason; positions:
    avg_price)."""
    for element in at.dataframe:
        frame = element.value
        if column in frame.columns:
            assert isinstance(frame, pd.DataFrame)
            return frame
    raise AssertionError(f"no table with a {column!r} column on the page")


def _halted(url: str, strategy_id: str) -> bool:
    items = httpx.get(f"{url}/strategies", timeout=5).json()["items"]
    return next(bool(s["halted"]) for s in items if s["id"] == strategy_id)


def test_live_page_shows_the_replays_orders_and_fills(
    api_url: str, dashboard_env: pytest.MonkeyPatch
) -> None:
    at = _live(dashboard_env, api_url, API_TOKEN)
    assert not at.error, [e.value for e in at.error]
    strategy = at.selectbox(key="live_strategy")
    assert set(strategy.options) >= {"sma-fast", "ema-slow"}
    orders = _table(at, "ref_price")
    fills = _table(at, "reject_reason")
    assert len(orders) > 0
    assert set(orders["symbol"]) == {"GOOG"}
    assert len(fills) > 0
    assert set(fills["status"]) <= {"filled", "rejected"}
    assert set(orders["reason"]) <= {
        "entry_long",
        "entry_short",
        "exit_cross",
        "stop_loss",
        "take_profit",
        "trailing_stop",
        "force_exit",  # the browser test force-exits a trade of this session's replay
    }
    positions = _table(at, "avg_price")
    assert set(positions["symbol"]) == {"GOOG"}
    summary = ["Equity", "P&L", "Realised", "Unrealised", "Today", "Open exposure", "Max drawdown", "Trades"]
    summary += ["Win rate", "Profit factor"]
    assert [m.label for m in at.metric] == [*summary, "total P&L", "realised", "unrealised", "commissions"]


def test_strategy_filter_changes_the_rows(api_url: str, dashboard_env: pytest.MonkeyPatch) -> None:
    at = _live(dashboard_env, api_url, API_TOKEN)
    at.selectbox(key="live_strategy").set_value("sma-fast").run()
    assert not at.exception
    sma = _table(at, "ref_price")
    assert set(sma["strategy_id"]) == {"sma-fast"}

    at.selectbox(key="live_strategy").set_value("ema-slow").run()
    ema = _table(at, "ref_price")
    assert set(ema["strategy_id"]) == {"ema-slow"}
    assert set(_table(at, "reject_reason")["strategy_id"]) == {"ema-slow"}
    assert at.selectbox(key="live_strategy").value == "ema-slow"  # kept in session state

    at.selectbox(key="live_strategy").set_value("__all__").run()
    assert set(_table(at, "ref_price")["strategy_id"]) == {"sma-fast", "ema-slow"}
    at.selectbox(key="live_symbol").set_value("GOOG").run()
    assert not at.exception
    assert set(_table(at, "ref_price")["symbol"]) == {"GOOG"}


def test_halt_and_resume_call_the_api(api_url: str, dashboard_env: pytest.MonkeyPatch) -> None:
    at = _live(dashboard_env, api_url, API_TOKEN)
    assert not at.button(key="halt-sma-fast").disabled
    assert at.button(key="resume-sma-fast").disabled  # running: nothing to resume
    try:
        at.button(key="halt-sma-fast").click().run()
        assert not at.exception
        assert _halted(api_url, "sma-fast")
        assert any("sma-fast halted" in s.value for s in at.success)
        assert "halted" in " ".join(m.value for m in at.markdown)

        at.button(key="resume-sma-fast").click().run()
        assert not at.exception
        assert not _halted(api_url, "sma-fast")
        assert any("sma-fast resumed" in s.value for s in at.success)
    finally:
        httpx.post(
            f"{api_url}/strategies/sma-fast/resume",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=5,
        )


def test_without_a_token_the_buttons_are_disabled(api_url: str, dashboard_env: pytest.MonkeyPatch) -> None:
    at = _live(dashboard_env, api_url, None)
    for key in ("halt-sma-fast", "resume-sma-fast", "halt-ema-slow", "resume-ema-slow"):
        assert at.button(key=key).disabled, key
    assert any("Read-only" in c.value for c in at.caption)

    # A token typed into the sidebar enables them; a wrong one is refused by the API, shown as an error.
    at.text_input(key="api_token_input").input("wrong-token").run()
    assert not at.button(key="halt-ema-slow").disabled
    at.button(key="halt-ema-slow").click().run()
    assert not at.exception
    assert any("403" in e.value for e in at.error), [e.value for e in at.error]
    assert not _halted(api_url, "ema-slow")


def test_a_typed_token_controls_for_its_session_only(api_url: str, dashboard_env: pytest.MonkeyPatch) -> None:
    """Issue 14.1: without TRADEBOT_API_TOKEN (the chart's default) the page is read-only; the operator's own
    token typed in works for that session, and another session (another browser) starts read-only again."""
    at = _live(dashboard_env, api_url, None)
    at.text_input(key="api_token_input").input(API_TOKEN).run()
    try:
        at.button(key="halt-sma-fast").click().run()
        assert _halted(api_url, "sma-fast")
        other = _live(dashboard_env, api_url, None)
        assert other.button(key="resume-sma-fast").disabled
        assert any("Read-only" in c.value for c in other.caption)
    finally:
        httpx.post(
            f"{api_url}/strategies/sma-fast/resume",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=5,
        )


def test_api_down_shows_an_error_banner_not_a_traceback(dashboard_env: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    at = _live(dashboard_env, url, None)
    assert not at.exception
    messages = [e.value for e in at.error]
    assert messages, "expected an error banner"
    assert url in messages[0]
    assert "retrying in 2 s" in messages[0]


def _requests_by_route(url: str) -> dict[str, float]:
    """The API's own request counter (`tradebot_http_requests_total`), summed per route template."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("tradebot_http_requests_total{"):
            labels, value = line.split("{", 1)[1].rsplit("} ", 1)
            route = labels.split('route="', 1)[1].split('"', 1)[0]
            counts[route] = counts.get(route, 0.0) + float(value)
    return counts


def test_the_charts_take_one_request_per_refresh(api_url: str, dashboard_env: pytest.MonkeyPatch) -> None:
    before = _requests_by_route(api_url)
    at = _live(dashboard_env, api_url, API_TOKEN)  # one run of the page: every fragment once
    assert not at.error, [e.value for e in at.error]
    after = _requests_by_route(api_url)
    made = {route: after[route] - before.get(route, 0.0) for route in after}
    assert made.get("/market") == 1  # every symbol's prices, orders and fills
    assert made.get("/prices/{symbol}", 0.0) == 0
    assert made.get("/orders") == 1  # the orders table only
    assert made.get("/fills") == 1
