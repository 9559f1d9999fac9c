"""Item 2: the pipeline trades in the pods, and the dashboard answers through its Service."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.conftest import get_json, http_get, service_url
from tests.plugins._proc import eventually, require_tool
from tests.plugins.cluster import LocalCluster

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHART = '[data-testid="stVegaLiteChart"], [data-testid="stArrowVegaLiteChart"]'


def test_ticks_reach_the_default_strategy_and_fills_reach_the_api(tradebot_release: LocalCluster) -> None:
    api = service_url(tradebot_release, "api")
    prices = eventually(
        "the simulator's prices in the API", lambda: (get_json(f"{api}/prices") or {}).get("items"), 120
    )
    assert {"BTCUSDT", "ETHUSDT"} <= {item["symbol"] for item in prices}, prices

    def default_fills() -> list[dict[str, object]]:
        page = get_json(f"{api}/fills?strategy=default&limit=50") or {}
        items: list[dict[str, object]] = page.get("items", [])
        return items

    fills = eventually("fills of the default strategy in the API", default_fills, 300, 2.0)
    assert all(fill.get("strategy_id", "default") == "default" for fill in fills), fills[:3]
    orders = get_json(f"{api}/orders?strategy=default&limit=50") or {}
    assert orders.get("items"), orders


def test_dashboard_answers_through_its_service(tradebot_release: LocalCluster, tmp_path: Path) -> None:
    dashboard = service_url(tradebot_release, "dashboard")
    status, body = http_get(f"{dashboard}/")
    assert status == 200, (status, body[:200])
    assert b"<html" in body.lower(), body[:200]
    assert http_get(f"{dashboard}/_stcore/health") == (200, b"ok")

    chromium = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    executable = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else str(chromium)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.set_default_timeout(60_000)
            page.goto(dashboard)
            page.locator(CHART).first.wait_for(state="visible")
            page.screenshot(path=str(tmp_path / "dashboard-on-cluster.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
