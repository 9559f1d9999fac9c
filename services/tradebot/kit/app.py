"""The service app: FastAPI with `/livez`, `/readyz`, `/metrics` and HTTP metrics; services add routers on top.

The API documentation (`/docs`, Swagger UI; `/redoc`) is served with its scripts and styles from the
`fastapi-offline` package's files, not a CDN, so it renders on a machine without internet access.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from importlib import metadata, resources
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from tradebot.kit.health import Readiness, ReadinessCheck
from tradebot.kit.settings import ServiceSettings

__all__ = [
    "HEALTH_PATHS",
    "ReadinessDep",
    "RegistryDep",
    "SettingsDep",
    "app_readiness",
    "app_registry",
    "app_settings",
    "create_service_app",
    "has_routes_of_its_own",
    "health_only",
    "readiness_of",
    "service_version",
]

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DOCS_ASSETS_URL = "/docs-assets"
# What a service's metrics port serves (`ServiceSettings.metrics_port`): probes and Prometheus, nothing else.
HEALTH_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


def service_version() -> str:
    """The installed `tradebot` distribution's version."""
    try:
        return metadata.version("tradebot")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def create_service_app(
    settings: ServiceSettings,
    *,
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    registry: CollectorRegistry | None = None,
    lifespan: Lifespan[FastAPI] | None = None,
    readiness_timeout_seconds: float = 2.0,
) -> FastAPI:
    """A FastAPI app answering `/livez`, `/readyz` and `/metrics`; add routes with `app.include_router`.

    `registry`: where the service's own metrics live; a fresh one if omitted. Process, platform and GC
    collectors are added to it unless it already has them, so the global `REGISTRY` works too.
    """
    # `*_created` samples double the series of every counter and histogram for what Prometheus
    # already knows from resets; nothing here reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = registry if registry is not None else CollectorRegistry()
    _register_default_collectors(registry)
    version = service_version()
    Gauge(
        "tradebot_build_info",
        "Always 1; labels say which service and version this is.",
        ["service", "version"],
        registry=registry,
    ).labels(service=settings.service_name, version=version).set(1)

    # FastAPI's own /docs and /redoc load their scripts from a CDN; `_add_offline_docs` serves them instead.
    app = FastAPI(
        title=f"tradebot {settings.service_name}",
        version=version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _add_offline_docs(app)
    app.state.settings = settings
    app.state.registry = registry
    app.state.readiness = Readiness(readiness_checks, timeout_seconds=readiness_timeout_seconds)
    app.add_middleware(_HttpMetricsMiddleware, registry=registry)

    @app.get("/livez", tags=["health"], summary="Liveness: answers while the event loop runs")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"], summary="Readiness: 200 when every check passes, else 503")
    async def readyz(readiness: ReadinessDep) -> JSONResponse:
        report = await readiness.evaluate()
        return JSONResponse(report.as_json(), status_code=200 if report.ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request, registry: RegistryDep) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    return app


def has_routes_of_its_own(app: FastAPI) -> bool:
    """True if `app` serves more than what every service app has (health, metrics, its documentation):
    the API does, the feed does not."""
    common = {
        *HEALTH_PATHS,
        app.openapi_url,
        DOCS_ASSETS_URL,
        "/docs",
        "/redoc",
        app.swagger_ui_oauth2_redirect_url,
    }
    return any(getattr(route, "path", None) not in common for route in app.routes)


def health_only(app: ASGIApp) -> ASGIApp:
    """`app` with every path but `HEALTH_PATHS` answered 404: what the metrics port serves, so opening it to
    Prometheus and the kubelet opens nothing else."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in HEALTH_PATHS:
            response = JSONResponse({"detail": "Not Found"}, status_code=404)
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    return serve


def _add_offline_docs(app: FastAPI) -> None:
    """/docs and /redoc as FastAPI documents it for self-hosted assets ("Self-hosting JavaScript and CSS
    for docs"), the files taken from the installed `fastapi-offline` package."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def _register_default_collectors(registry: CollectorRegistry) -> None:
    for make in (ProcessCollector, PlatformCollector, GCCollector):
        # ValueError "Duplicated timeseries": the registry has it already (e.g. prometheus_client.REGISTRY).
        with contextlib.suppress(ValueError):
            make(registry=registry)


class _HttpMetricsMiddleware:
    """Request count and latency with bounded labels: route template, method, status code."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "tradebot_http_requests",
            "HTTP requests answered.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "tradebot_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route", "method"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before starting a response
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = _route_template(scope.get("route"))
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            self.requests.labels(route, method, str(status)).inc()
            self.duration.labels(route, method).observe(time.perf_counter() - started)


def _route_template(route: BaseRoute | None) -> str:
    # Unmatched paths share one label: raw paths would let any client grow the series without bound.
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def app_settings(request: Request) -> ServiceSettings:
    """The app's settings (a subclass instance for each service)."""
    settings: ServiceSettings = request.app.state.settings
    return settings


def app_readiness(request: Request) -> Readiness:
    return readiness_of(request.app)


def app_registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.app.state.registry
    return registry


def readiness_of(app: FastAPI) -> Readiness:
    """The app's readiness, e.g. to `add_check` once a client exists."""
    readiness: Readiness = app.state.readiness
    return readiness


SettingsDep = Annotated[ServiceSettings, Depends(app_settings)]
ReadinessDep = Annotated[Readiness, Depends(app_readiness)]
RegistryDep = Annotated[CollectorRegistry, Depends(app_registry)]
