"""Helpers for the kit's tests: free ports, polling, an in-process served app, promtool."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tradebot.kit.lifecycle import ShutdownEvent, serve_service
from tradebot.kit.ports import free_port as free_port  # the one home; tests import it from here
from tradebot.kit.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], what: str, limit_seconds: float = 60.0) -> None:
    """Poll `condition` until true; fail (never a speed assertion: the limit only stops a hung test)."""
    give_up = time.monotonic() + limit_seconds
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


@contextlib.asynccontextmanager
async def served(
    app: FastAPI, settings: ServiceSettings, port: int | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve `app` with real uvicorn on 127.0.0.1 (kit's serve_service, no main loop); yield a client of
    `port` (default: the http port) once its /livez answers."""
    shutdown = ShutdownEvent()
    service = asyncio.create_task(
        serve_service(None, settings, app=app, shutdown=shutdown, handle_signals=False)
    )
    base_url = f"http://{settings.http_host}:{port or settings.http_port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        give_up = time.monotonic() + 60
        while True:
            if service.done():
                pytest.fail(f"service stopped before serving (exit code {service.result()})")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/livez")).status_code == 200:
                    break
            if time.monotonic() > give_up:
                pytest.fail("gave up waiting for /livez")
            await asyncio.sleep(0.02)
        try:
            yield client
        finally:
            shutdown.set("test done")
            assert await service == 0


def find_promtool() -> str:
    """promtool from `make tools` (.tools/bin) or the system; missing: fail under CI=true, else skip."""
    try:
        proc_plugin = importlib.import_module("tests.plugins._proc")
    except ModuleNotFoundError:
        proc_plugin = None
    if proc_plugin is not None and hasattr(proc_plugin, "require_tool"):
        found = proc_plugin.require_tool("promtool")
        if found:
            return str(found)
    search_path = os.pathsep.join([str(REPO_ROOT / ".tools" / "bin"), os.environ.get("PATH", "")])
    path = shutil.which("promtool", path=search_path)
    if path is not None:
        return path
    message = "promtool is missing: run `make tools` (or `apt-get install prometheus`)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
