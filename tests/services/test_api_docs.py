"""/docs and /redoc work without internet: their scripts and styles come from the service itself (issue 16.7)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.dashboard.test_browser import CHROMIUM_ARGS
from tests.plugins._proc import free_port, require_tool
from tradebot.adapters.memory_store import MemoryStore
from tradebot.api.app import ApiSettings, create_api

# Every URL a page loads: src/href attributes and the `url: '...'` Swagger UI and ReDoc fetch the spec from.
URL_IN_PAGE = re.compile(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""")


def api_app() -> FastAPI:
    return create_api(ApiSettings(), MemoryStore())


@pytest.mark.parametrize(("page", "expected"), [("/docs", 4), ("/redoc", 3)])
def test_the_docs_pages_load_only_local_urls_that_answer(page: str, expected: int) -> None:
    with TestClient(api_app()) as client:
        html = client.get(page)
        assert html.status_code == 200
        urls = URL_IN_PAGE.findall(html.text)
        # The spec plus the script, favicon (and the stylesheet for Swagger UI): nothing missed by the pattern.
        assert len(urls) == expected, urls
        for url in urls:
            parts = urlsplit(url)
            assert (parts.scheme, parts.netloc) == ("", ""), f"{page} loads {url} from elsewhere"
            answer = client.get(url)
            assert answer.status_code == 200, url
            assert len(answer.content) > 1000, url


@pytest.fixture
def api_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="docs-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_swagger_ui_renders_in_chromium_with_no_network_beyond_this_machine(
    api_url: str, tmp_path: Path
) -> None:
    chromium = require_tool("chromium")
    from playwright.sync_api import Route, expect, sync_playwright

    executable = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else str(chromium)
    elsewhere: list[str] = []

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:  # what a machine without internet would meet
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.set_default_timeout(30_000)
            page.route("**/*", only_local)
            page.goto(f"{api_url}/docs")
            operations = page.locator(".swagger-ui .opblock")
            expect(operations.first).to_be_visible()
            assert operations.count() >= 10
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("tradebot API")
            expect(page.locator(".swagger-ui")).to_contain_text("/signals")
            page.screenshot(path=str(tmp_path / "api-docs.png"), full_page=True)
        finally:
            browser.close()
    assert elsewhere == []
