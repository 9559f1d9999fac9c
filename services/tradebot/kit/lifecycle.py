"""Running a service the way Kubernetes expects: health server beside the main loop, graceful SIGTERM.

On the first SIGTERM/SIGINT: `/readyz` turns 503 at once, the `ShutdownEvent` is set, the service's main
coroutine finishes its current unit of work and returns; it has `shutdown_grace_seconds` for that before
it is cancelled. The HTTP server stops last (so probes see 503, not a refused connection, while main
drains). Exit code 0 when all went well, 1 when main failed or overran, 128+signal on a second signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Literal

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from tradebot.kit.app import (
    create_service_app,
    has_routes_of_its_own,
    health_only,
    readiness_of,
    service_version,
)
from tradebot.kit.logging import configure_logging
from tradebot.kit.settings import ServiceSettings

__all__ = ["ServiceMain", "ShutdownEvent", "run_service", "serve_service"]

logger = logging.getLogger(__name__)

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownEvent:
    """Set once when the service should stop; main loops check it between units of work."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._callbacks: list[Callable[[], None]] = []
        self.reason: str | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, reason: str = "requested") -> None:
        """Request shutdown (idempotent); runs the callbacks, e.g. flipping readiness, synchronously."""
        if self._event.is_set():
            return
        self.reason = reason
        self._event.set()
        for callback in self._callbacks:
            callback()

    async def wait(self) -> None:
        await self._event.wait()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on shutdown; True if shutdown was requested.

        The interruptible pause of a polling loop: `while not await shutdown.sleep(1.0): poll()`.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        return self._event.is_set()

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when shutdown is requested (at once if it already was)."""
        self._callbacks.append(callback)
        if self._event.is_set():
            callback()


# A service's main loop: does units of work until `shutdown` is set, then closes its clients and returns.
ServiceMain = Callable[[ShutdownEvent], Awaitable[None]]


def run_service(main: ServiceMain | None, settings: ServiceSettings, *, app: FastAPI | None = None) -> int:
    """Configure logging, serve `app` (default: health and metrics only) beside `main`; return exit code.

    `main=None` for a service that is only its HTTP app (api). Use from a CLI command:
    `return run_service(main, settings, app=app)`.
    """
    configure_logging(settings)
    tune_collector()
    return asyncio.run(serve_service(main, settings, app=app))


# Python's cyclic collector runs its youngest generation every 700 allocations by default; a service
# allocating records, models and dicts by the thousand per poll batch then collects hundreds of times a
# second, and every older collection walks all the objects start-up made (modules, pydantic schemas).
# Its pauses land on the live path's p99 (services/README.md, "Where the latency goes"). Almost nothing
# here makes reference cycles, so collecting rarely frees as much.
YOUNG_GENERATION_THRESHOLD = 50_000


def tune_collector() -> None:
    """Moves everything start-up made out of the collector's reach (`gc.freeze`: it is never garbage)
    and lets the young generation grow to `YOUNG_GENERATION_THRESHOLD` allocations between collections."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


async def serve_service(
    main: ServiceMain | None,
    settings: ServiceSettings,
    *,
    app: FastAPI | None = None,
    shutdown: ShutdownEvent | None = None,
    handle_signals: bool = True,
) -> int:
    """`run_service` inside a running loop; tests pass their own `shutdown` and `handle_signals=False`."""
    loop = asyncio.get_running_loop()
    app = app if app is not None else create_service_app(settings)
    shutdown = shutdown if shutdown is not None else ShutdownEvent()
    shutdown.add_callback(readiness_of(app).mark_shutting_down)
    logger.info("service starting", extra={"version": service_version(), "settings": settings.safe_dump()})
    servers = _http_servers(settings, app)
    with _signal_handlers(loop, shutdown) if handle_signals else contextlib.nullcontext():
        return await _supervise(main, settings, servers, shutdown)


def _http_servers(settings: ServiceSettings, app: FastAPI) -> list[_HealthServer]:
    """One server on `http_port`, or with `metrics_port` set: health and metrics there alone, and the app's
    own routes (if it has any) on `http_port`. The app's lifespan runs once, in the first server."""

    def server(asgi: ASGIApp, port: int, lifespan: Literal["on", "off"]) -> _HealthServer:
        return _HealthServer(
            uvicorn.Config(
                asgi,
                host=settings.http_host,
                port=port,
                lifespan=lifespan,
                log_config=None,  # configure_logging owns uvicorn's loggers
                server_header=False,
                timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
            )
        )

    if settings.metrics_port is None:
        return [server(app, settings.http_port, "on")]
    if not has_routes_of_its_own(app):
        return [server(app, settings.metrics_port, "on")]
    return [server(app, settings.http_port, "on"), server(health_only(app), settings.metrics_port, "off")]


class _HealthServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _signal_handlers(loop: asyncio.AbstractEventLoop, shutdown: ShutdownEvent) -> Iterator[None]:
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) == 1:
            logger.info("shutdown requested", extra={"signal": sig.name})
            shutdown.set(f"signal {sig.name}")
            return
        logger.warning("second signal: exiting at once", extra={"signal": sig.name})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(128 + sig)  # forced: skip cleanup that may be what hangs

    for sig in _HANDLED_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in _HANDLED_SIGNALS:
            loop.remove_signal_handler(sig)


async def _supervise(
    main: ServiceMain | None, settings: ServiceSettings, servers: list[_HealthServer], shutdown: ShutdownEvent
) -> int:
    loop = asyncio.get_running_loop()
    http_tasks = {
        asyncio.create_task(_serve_http(server), name=f"http-server-{server.config.port}"): server
        for server in servers
    }
    while not all(server.started for server in servers):
        if failed := [task for task in http_tasks if task.done()]:
            logger.error("http server failed to start", exc_info=_exception_of(failed[0]))
            for server in servers:
                server.should_exit = True
            await asyncio.wait(http_tasks)
            return 1
        await asyncio.sleep(0.01)
    logger.info(
        "service started",
        extra={"http_host": settings.http_host, "http_ports": [server.config.port for server in servers]},
    )

    async def run_main() -> None:
        await (main(shutdown) if main is not None else shutdown.wait())

    main_task = asyncio.create_task(run_main(), name="service-main")
    shutdown_requested = asyncio.create_task(shutdown.wait(), name="shutdown-requested")
    await asyncio.wait({main_task, *http_tasks, shutdown_requested}, return_when=asyncio.FIRST_COMPLETED)
    shutdown_requested.cancel()
    exit_code = 0
    if not shutdown.is_set():
        if main_task.done():
            shutdown.set("main failed" if _exception_of(main_task) else "main returned")
        else:
            logger.error("http server stopped unexpectedly")
            shutdown.set("http server stopped")
            exit_code = 1

    deadline = loop.time() + settings.shutdown_grace_seconds
    if not main_task.done():
        logger.info("waiting for main to finish", extra={"grace_seconds": settings.shutdown_grace_seconds})
        done, _ = await asyncio.wait({main_task}, timeout=settings.shutdown_grace_seconds)
        if not done:
            logger.error("shutdown grace period exceeded: cancelling main")
            main_task.cancel()
            await asyncio.wait({main_task})
            exit_code = 1
    if not main_task.cancelled() and (error := main_task.exception()) is not None:
        # The error's own words in the record (not only at the end of the traceback): what an operator greps.
        logger.error("main failed", exc_info=error, extra={"error": f"{type(error).__name__}: {error}"})
        exit_code = 1
    else:
        logger.info("main finished")

    # In-flight HTTP requests get what is left of the grace period (at least a second).
    for server in servers:
        server.config.timeout_graceful_shutdown = max(1, math.ceil(deadline - loop.time()))
        server.should_exit = True
    await asyncio.wait(http_tasks)
    for task in http_tasks:
        if (error := _exception_of(task)) is not None:
            logger.error("http server failed", exc_info=error)
            exit_code = 1
    logger.info("service stopped", extra={"exit_code": exit_code, "reason": shutdown.reason})
    return exit_code


async def _serve_http(server: _HealthServer) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn calls sys.exit on a busy port or a failed lifespan (after logging why); the runner decides.
        raise RuntimeError(f"uvicorn could not start (exit code {exc.code})") from None


def _exception_of(task: asyncio.Task[None]) -> BaseException | None:
    return None if task.cancelled() else task.exception()
