"""`tradebot dashboard`: Streamlit as a subprocess, with `/livez`, `/readyz` and `/metrics` beside it.

The health server listens on TRADEBOT_HTTP_PORT (default 8080); `/readyz` passes once Streamlit answers
its own `/_stcore/health`. SIGTERM/SIGINT are forwarded to Streamlit; the exit code is Streamlit's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

APP_PATH = Path(__file__).with_name("app.py")

logger = logging.getLogger(__name__)


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serves the Streamlit dashboard over the tradebot API (TRADEBOT_API_URL), "
        "with /livez, /readyz and /metrics on TRADEBOT_HTTP_PORT."
    )
    parser.add_argument("--port", type=int, default=8501, help="port of the Streamlit UI (default 8501)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface of the Streamlit UI (default 127.0.0.1)"
    )


def streamlit_argv(host: str, port: int, upload_max_mb: int = 32) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.port", str(port),
        "--server.address", host,
        # Streamlit's own bound (200 MB by default) refuses a larger file before it is in memory at all.
        "--server.maxUploadSize", str(upload_max_mb),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # No "Deploy" button (to Streamlit's cloud) nor developer menu: this page is an operator's cockpit.
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def _signal_of(reason: str | None) -> signal.Signals:
    """The signal to forward: the one that stopped us (`shutdown.reason` is "signal SIGINT"), else SIGTERM."""
    if reason and reason.startswith("signal "):
        with contextlib.suppress(KeyError):
            return signal.Signals[reason.removeprefix("signal ")]
    return signal.SIGTERM


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def run(args: argparse.Namespace) -> int:
    import httpx

    from tradebot.dashboard.settings import DashboardSettings
    from tradebot.kit.app import create_service_app
    from tradebot.kit.children import owned_child
    from tradebot.kit.lifecycle import ShutdownEvent, run_service
    from tradebot.kit.settings import load_settings_or_exit

    settings = load_settings_or_exit(DashboardSettings)
    probe_host = "127.0.0.1" if args.host in ("0.0.0.0", "", "::") else args.host
    health_url = f"http://{probe_host}:{args.port}/_stcore/health"

    async def streamlit_answers() -> bool:
        async with httpx.AsyncClient(timeout=1.5) as client:
            response = await client.get(health_url)
            return response.status_code == 200

    app = create_service_app(settings, readiness_checks={"streamlit": streamlit_answers})
    outcome: dict[str, int] = {}

    async def main(shutdown: ShutdownEvent) -> None:
        process = await asyncio.create_subprocess_exec(
            *streamlit_argv(args.host, args.port, settings.upload_max_mb),
            stdin=asyncio.subprocess.DEVNULL,
            env=dict(os.environ),
            **owned_child(),
        )
        logger.info(
            "streamlit started", extra={"pid": process.pid, "port": args.port, "api_url": settings.api_url}
        )
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(shutdown.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                sig = _signal_of(shutdown.reason)
                logger.info("stopping streamlit", extra={"signal": sig.name})
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                # Leave a little of the grace period for the health server to stop.
                budget = max(1.0, settings.shutdown_grace_seconds - 2.0)
                done, _ = await asyncio.wait({exited}, timeout=budget)
                if not done:
                    logger.warning("streamlit did not stop in time: killing it")
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await exited
            else:
                logger.warning("streamlit exited", extra={"returncode": process.returncode})
        finally:
            stopping.cancel()
            if process.returncode is None:  # cancelled: never leave Streamlit behind
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        outcome["returncode"] = process.returncode if process.returncode is not None else 1

    code = run_service(main, settings, app=app)
    if "returncode" not in outcome:
        return code
    streamlit_code = _exit_code(outcome["returncode"])
    return streamlit_code if streamlit_code != 0 else code
