"""The live page's cockpit in a real browser (issue 16): read the summary, force-exit the open trade, find
it closed in the closed-trades table and in the event log. Screenshots go to tests/dashboard/output like test_browser's."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.dashboard.test_browser import CHROMIUM_ARGS, OUTPUT_DIR, TABLE, dashboard
from tests.plugins._proc import require_tool

__all__ = ["dashboard"]  # the fixture, shared with test_browser


def test_force_exit_from_the_live_page(api_url: str, dashboard: tuple[str, int], tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    from playwright.sync_api import expect, sync_playwright

    url, _ = dashboard
    summary = httpx.get(f"{api_url}/summary", timeout=5).json()
    fast = next(row for row in summary["items"] if row["strategy_id"] == "sma-fast")
    open_before = [
        t for t in httpx.get(f"{api_url}/trades", timeout=5).json()["open"] if t["strategy_id"] == "sma-fast"
    ]
    assert [t["symbol"] for t in open_before] == ["GOOG"], "the GOOG replay ends with sma-fast holding GOOG"
    executable = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else str(chromium)
    before, after = tmp_path / "cockpit-before.png", tmp_path / "cockpit-after-force-exit.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2400})
            page.set_default_timeout(30_000)
            page.goto(url)
            page.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="sma-fast").click()
            # The summary, at the top: the selected strategy's equity and its statistics, and the table.
            metrics = page.locator('[data-testid="stMetric"]')
            expect(metrics.filter(has_text="Equity").first).to_contain_text(f"{fast['equity']:,.2f}")
            expect(metrics.filter(has_text="Trades").first).to_contain_text(str(fast["trades"]))
            expect(metrics.filter(has_text="Max drawdown").first).to_contain_text(
                f"{fast['max_drawdown_pct']:.2f}%"
            )
            expect(page.locator(TABLE).first).to_contain_text("total")
            button = page.get_by_role("button", name="Force exit sma-fast GOOG")
            expect(button).to_be_enabled()
            page.screenshot(path=str(before), full_page=True)

            button.click()
            expect(page.get_by_text("Force-exit of sma-fast GOOG sent (GOOG)")).to_be_visible()
            # Within a refresh or two the trade is closed: no open trade, and the closed table shows it.
            expect(page.get_by_text("No open trade: sma-fast.")).to_be_visible(timeout=20_000)
            # The closed-trades table is the one with an exit_reason column.
            closed = page.locator(TABLE).filter(has_text="exit_reason").filter(has_text="force_exit")
            expect(closed.first).to_be_visible(timeout=20_000)
            # The event log holds the request and the fill of the force-exit.
            log = page.locator(TABLE).filter(has_text="message").filter(has_text="force-exit-request")
            expect(log.first).to_contain_text("force_exit: sell 72", timeout=20_000)
            page.screenshot(path=str(after), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    trades = httpx.get(f"{api_url}/trades?strategy=sma-fast", timeout=5).json()
    assert trades["open"] == []
    assert [(t["symbol"], t["exit_reason"]) for t in trades["closed"][:1]] == [("GOOG", "force_exit")]
    OUTPUT_DIR.mkdir(exist_ok=True)
    for shot in (before, after):
        shutil.copy(shot, OUTPUT_DIR / shot.name)
