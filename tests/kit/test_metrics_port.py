"""`metrics_port`: probes and metrics on a port of their own, so a NetworkPolicy can open them to Prometheus
and the kubelet without opening the API (issue 14.2). Real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.kit.support import free_port, served
from tradebot.kit.app import create_service_app
from tradebot.kit.settings import ServiceSettings, SettingsError, load_settings


def _settings(**values: object) -> ServiceSettings:
    return ServiceSettings(http_host="127.0.0.1", http_port=free_port(), **values)  # type: ignore[arg-type]


def _app_with_a_route(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings)

    @app.get("/orders")
    async def orders() -> list[str]:
        return ["o-1"]

    return app


async def test_the_metrics_port_serves_probes_and_metrics_and_nothing_of_the_api() -> None:
    metrics_port = free_port()
    settings = _settings(metrics_port=metrics_port)
    async with served(_app_with_a_route(settings), settings, metrics_port) as metrics:
        assert (await metrics.get("/livez")).status_code == 200
        assert (await metrics.get("/readyz")).status_code == 200
        scraped = await metrics.get("/metrics")
        assert scraped.status_code == 200
        assert "tradebot_build_info" in scraped.text
        # The API's routes, its schema and its docs are not on the metrics port.
        for path in ("/orders", "/openapi.json", "/docs", "/"):
            assert (await metrics.get(path)).status_code == 404, path
        assert (await metrics.get(f"http://127.0.0.1:{settings.http_port}/orders")).json() == ["o-1"]
        # Requests on both ports land in the one registry.
        after = (await metrics.get("/metrics")).text
        assert 'tradebot_http_requests_total{method="GET",route="/orders",status="200"} 1.0' in after


async def test_a_service_without_routes_of_its_own_opens_only_the_metrics_port() -> None:
    metrics_port = free_port()
    settings = _settings(metrics_port=metrics_port)
    async with served(create_service_app(settings), settings, metrics_port) as metrics:
        assert (await metrics.get("/metrics")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await metrics.get(f"http://127.0.0.1:{settings.http_port}/livez")


async def test_without_a_metrics_port_everything_shares_the_http_port() -> None:
    settings = _settings()
    app = _app_with_a_route(settings)
    async with served(app, settings) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/orders")).json() == ["o-1"]


def test_a_metrics_port_equal_to_the_http_port_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADEBOT_HTTP_PORT", "8080")
    monkeypatch.setenv("TRADEBOT_METRICS_PORT", "8080")
    with pytest.raises(SettingsError, match=r"TRADEBOT_METRICS_PORT.*port of their own"):
        load_settings(ServiceSettings)
