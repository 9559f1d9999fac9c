"""The service app on real uvicorn: /livez, /readyz with real checks, /metrics in Prometheus text format."""

from __future__ import annotations

import asyncio
import socket

import httpx
from fastapi import APIRouter, HTTPException
from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.kit.support import find_promtool, free_port, served
from tradebot.kit.app import SettingsDep, create_service_app, readiness_of, service_version
from tradebot.kit.health import ReadinessCheck, tcp_check
from tradebot.kit.settings import ServiceSettings, load_settings


class SampleSettings(ServiceSettings):
    service_name: str = "kit-test"
    http_host: str = "127.0.0.1"


def _settings() -> SampleSettings:
    return load_settings(SampleSettings, http_port=free_port())


def _flag_check(flag: dict[str, bool]) -> ReadinessCheck:
    async def check() -> bool:
        return flag["up"]

    return check


async def test_livez_answers_while_the_loop_runs() -> None:
    async with served(create_service_app(_settings()), _settings()) as client:
        response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_readyz_is_503_while_a_dependency_is_down_and_200_once_it_is_up() -> None:
    # A bound socket that does not listen refuses connections; once it listens, the check connects.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as upstream:
        upstream.bind(("127.0.0.1", 0))
        host, port = upstream.getsockname()
        flag = {"up": True}
        settings = _settings()
        app = create_service_app(
            settings, readiness_checks={"upstream": tcp_check(host, port), "flag": _flag_check(flag)}
        )
        async with served(app, settings) as client:
            down = await client.get("/readyz")
            upstream.listen()
            up = await client.get("/readyz")
            flag["up"] = False
            flag_down = await client.get("/readyz")
    assert down.status_code == 503
    assert down.json() == {
        "status": "not_ready",
        "checks": {"upstream": False, "flag": True},
        "failing": ["upstream"],
    }
    assert up.status_code == 200
    assert up.json() == {"status": "ready", "checks": {"upstream": True, "flag": True}}
    assert flag_down.status_code == 503
    assert flag_down.json()["failing"] == ["flag"]


async def test_a_check_that_raises_or_hangs_counts_as_failing() -> None:
    async def raises() -> bool:
        raise ConnectionError("redis went away")

    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    async def passes() -> bool:
        return True

    settings = _settings()
    app = create_service_app(
        settings,
        readiness_checks={"raises": raises, "hangs": hangs, "passes": passes},
        readiness_timeout_seconds=0.2,
    )
    async with served(app, settings) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["hangs", "raises"]
    assert response.json()["checks"]["passes"] is True


async def test_checks_run_concurrently() -> None:
    # Each check passes only when the other is running at the same time: run one after the other,
    # both would wait at the barrier until their timeout and fail.
    both_running = asyncio.Barrier(2)

    async def meets_the_other() -> bool:
        await both_running.wait()
        return True

    settings = _settings()
    app = create_service_app(settings, readiness_checks={"kafka": meets_the_other, "redis": meets_the_other})
    async with served(app, settings) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text


async def test_readyz_is_503_once_shutting_down_and_checks_can_be_added_later() -> None:
    settings = _settings()
    app = create_service_app(settings)
    flag = {"up": False}
    async with served(app, settings) as client:
        no_checks = await client.get("/readyz")
        readiness_of(app).add_check("consumer", _flag_check(flag))
        added = await client.get("/readyz")
        flag["up"] = True
        readiness_of(app).mark_shutting_down()
        shutting_down = await client.get("/readyz")
    assert no_checks.status_code == 200
    assert added.json()["failing"] == ["consumer"]
    assert shutting_down.status_code == 503
    assert shutting_down.json()["status"] == "shutting_down"


async def _exercise_routes_and_scrape(client: httpx.AsyncClient) -> str:
    assert (await client.get("/items/1")).status_code == 200
    assert (await client.get("/items/2")).status_code == 200
    assert (await client.get("/items/404")).status_code == 404
    assert (await client.get("/no/such/path/7")).status_code == 404
    assert (await client.get("/boom")).status_code == 500
    assert (await client.request("PROPFIND", "/items/1")).status_code == 405
    scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    return scrape.text


def _sample_router() -> APIRouter:
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: int, settings: SettingsDep) -> dict[str, object]:
        if item_id == 404:
            raise HTTPException(status_code=404, detail="no such item")
        return {"item": item_id, "service": settings.service_name}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("route failed")

    return router


async def test_metrics_in_prometheus_text_format_with_bounded_http_labels() -> None:
    settings = _settings()
    registry = CollectorRegistry()
    fills = Counter("tradebot_fills", "Fills booked.", registry=registry)
    fills.inc(3)
    app = create_service_app(settings, registry=registry)
    app.include_router(_sample_router())
    async with served(app, settings) as client:
        assert (await client.get("/items/1")).json() == {"item": 1, "service": "kit-test"}
        text = await _exercise_routes_and_scrape(client)

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def requests(route: str, method: str, status: str) -> float:
        labels = (("method", method), ("route", route), ("status", status))
        return samples.get(("tradebot_http_requests_total", labels), 0.0)

    assert samples[("tradebot_build_info", (("service", "kit-test"), ("version", service_version())))] == 1
    assert samples[("tradebot_fills_total", ())] == 3
    assert requests("/items/{item_id}", "GET", "200") == 3
    assert requests("/items/{item_id}", "GET", "404") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert requests("/boom", "GET", "500") == 1
    assert requests("/items/{item_id}", "OTHER", "405") == 1
    duration_count = samples[
        ("tradebot_http_request_duration_seconds_count", (("method", "GET"), ("route", "/items/{item_id}")))
    ]
    assert duration_count == 4
    # No raw path ever becomes a label value.
    assert not [
        key for key in samples if ("route", "/items/1") in key[1] or ("route", "/no/such/path/7") in key[1]
    ]
    names = {name for name, _labels in samples}
    assert "process_cpu_seconds_total" in names
    assert "python_info" in names
    assert "python_gc_collections_total" in names


async def test_promtool_accepts_the_metrics_output() -> None:
    promtool = find_promtool()
    settings = _settings()
    app = create_service_app(settings)
    app.include_router(_sample_router())
    async with served(app, settings) as client:
        text = await _exercise_routes_and_scrape(client)
    checker = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await checker.communicate(text.encode())
    assert checker.returncode == 0, output.decode()
    assert output.decode() == "", "promtool lint findings"


async def test_openmetrics_is_served_when_asked_for() -> None:
    settings = _settings()
    async with served(create_service_app(settings), settings) as client:
        scrape = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    assert scrape.text.endswith("# EOF\n")


def test_a_registry_that_already_has_the_default_collectors_is_accepted() -> None:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    create_service_app(_settings(), registry=registry)
