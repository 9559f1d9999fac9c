"""`tradebot dashboard` in a real browser (Chromium via Playwright) against the replay's API."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dashboard.conftest import API_TOKEN
from tests.plugins._proc import REPO_ROOT, ServerProcess, free_port, require_tool

OUTPUT_DIR = Path(__file__).resolve().parent / "output"
CHART = '[data-testid="stVegaLiteChart"], [data-testid="stArrowVegaLiteChart"]'
TABLE = '[data-testid="stDataFrame"]'
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def dashboard(api_url: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    port, health_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_")}
    env.update(
        TRADEBOT_API_URL=api_url, TRADEBOT_API_TOKEN=API_TOKEN, TRADEBOT_HTTP_PORT=str(health_port),
        TRADEBOT_HTTP_HOST="127.0.0.1", TRADEBOT_LOG_JSON="false", TRADEBOT_REFRESH_SECONDS="2",
    )  # fmt: skip
    argv = [sys.executable, "-m", "tradebot.cli", "dashboard", "--port", str(port), "--host", "127.0.0.1"]
    process = ServerProcess("dashboard", argv, tmp_path, env=env, cwd=REPO_ROOT)
    try:
        process.wait_until(
            "Streamlit's health", lambda: _healthy(f"http://127.0.0.1:{port}/_stcore/health"), 60
        )
        process.wait_until("/readyz", lambda: _healthy(f"http://127.0.0.1:{health_port}/readyz"), 30)
        yield f"http://127.0.0.1:{port}", health_port
    finally:
        process.stop(timeout=20.0)
    assert process.popen.returncode == 0, process.log_tail()


def test_dashboard_in_a_browser(dashboard: tuple[str, int], tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    from playwright.sync_api import expect, sync_playwright

    url, health_port = dashboard
    metrics = httpx.get(f"http://127.0.0.1:{health_port}/metrics", timeout=5).text
    assert 'tradebot_build_info{service="dashboard"' in metrics
    executable = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else str(chromium)
    shot = tmp_path / "dashboard-live.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2200})
            page.set_default_timeout(30_000)
            page.goto(url)
            page.locator(CHART).first.wait_for(state="visible")
            tables = page.locator(TABLE)
            expect(tables.nth(2)).to_be_visible()
            orders = page.locator(f'[data-testid="stColumn"]:has-text("Orders") {TABLE}').first
            expect(orders).to_contain_text("GOOG")
            expect(page.get_by_text("running").first).to_be_visible()
            # Streamlit's "Deploy" button (to its cloud) has no place on an operator's page.
            expect(page.locator('[data-testid="stAppDeployButton"]')).to_have_count(0)

            # Change a filter: the strategy selectbox -> sma-fast; the tables follow, without a reload.
            page.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="sma-fast").click()
            expect(page.get_by_text("newest 200 first; sma-fast").first).to_be_visible()
            expect(orders).to_contain_text("sma-fast")
            page.locator(CHART).first.wait_for(state="visible")
            time.sleep(2.5)  # one fragment refresh: the filter must survive it
            expect(page.get_by_text("newest 200 first; sma-fast").first).to_be_visible()
            page.screenshot(path=str(shot), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    OUTPUT_DIR.mkdir(exist_ok=True)
    shutil.copy(shot, OUTPUT_DIR / shot.name)
