"""Monitoring proven against a real Prometheus.

`tradebot up --prometheus` runs the pipeline as separate processes over real Kafka and Redis, fed by a
simulator replaying a CSV, and starts Debian's Prometheus with a generated scrape config and our rules
file; the operator runs against a real API server and is scraped too (`--scrape`). After the replay:
every service exposes exactly what services/README.md catalogues, every recording rule and every
dashboard query returns data, and stopping the price source makes the feed alert go pending.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring.catalogue import EVERY_SERVICE, RULES, catalogue, exposition
from tests.monitoring.test_dashboard import panel_queries
from tests.plugins._proc import (
    REPO_ROOT,
    ServerProcess,
    eventually,
    free_port,
    http_ok,
    port_open,
    require_tool,
)
from tests.plugins.kube import KubeCluster
from tests.plugins.servers import KafkaBroker, RedisServer, start_kafka, start_redis
from tests.plugins.tradebot_operator import Operator, kubectl_ok

pytestmark = pytest.mark.slow

SYMBOL = "SINE"
ROWS = 1500
STRATEGIES = {
    "sma-fast": {"shortWindow": 5, "longWindow": 20, "stopLossPct": 1.0},
    "ema-slow": {"maType": "ema", "shortWindow": 10, "longWindow": 40, "trailingStopPct": 2.0},
}
# Grafana's variables, as a dashboard showing every strategy over the last few hours expands them
# ($__rate_interval grows with the range; 5m keeps the replay inside every window while the test runs).
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "15s",
    "${strategy}": ".*",
    "$strategy": ".*",
}


@dataclass
class Monitored:
    prometheus: str
    up: ServerProcess
    simulator: ServerProcess
    simulator_metrics_port: int

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.prometheus}/api/v1/{path}", timeout=10) as response:
            return json.load(response)["data"]


def write_replay(path: Path, rows: int = ROWS) -> None:
    """A sine wave, one tick every 10 ms, on which the moving averages cross every few dozen ticks.
    Replayed in real time with live timestamps, it is a live market: tick-to-fill latency is measured."""
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    lines = ["timestamp,price"]
    for i in range(rows):
        ts = start + timedelta(milliseconds=10 * i)
        price = 100.0 + 3.0 * math.sin(2 * math.pi * i / 150) + 0.002 * i
        lines.append(f"{ts.isoformat(timespec='milliseconds')},{price:.4f}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def monitored(
    kube_apiserver: KubeCluster,
    tradingstrategy_crd: Path,
    operator: Operator,
) -> Iterator[Monitored]:
    require_tool("prometheus")
    root = Path(tempfile.mkdtemp(prefix="tradebot-monitoring-"))
    kafka: KafkaBroker | None = None
    redis: RedisServer | None = None
    processes: list[ServerProcess] = []
    try:
        (root / "kafka").mkdir()
        (root / "redis").mkdir()
        kafka = start_kafka(root / "kafka")
        redis = start_redis(root / "redis")
        # The operator manages one strategy, so its metrics have something to say.
        kubectl_ok(kube_apiserver, "create", "namespace", "monitoring-e2e")
        kubectl_ok(
            kube_apiserver,
            "apply",
            "-n",
            "monitoring-e2e",
            "-f",
            str(REPO_ROOT / "manifests" / "examples" / "sma-basic.yaml"),
        )
        replay = root / "sine.csv"
        write_replay(replay)
        env = {**os.environ, "TRADEBOT_LOG_JSON": "true"}
        simulator_port, simulator_metrics_port = free_port(), free_port()
        simulator = ServerProcess(
            "simulator",
            [sys.executable, "-m", "tradebot.cli", "simulator", "--replay", str(replay), "--speed", "1",
             "--live-timestamps", "--symbol", SYMBOL, "--port", str(simulator_port)],
            root,
            env={**env, "TRADEBOT_HTTP_PORT": str(simulator_metrics_port), "TRADEBOT_HTTP_HOST": "127.0.0.1"},
            cwd=REPO_ROOT,
        )  # fmt: skip
        processes.append(simulator)
        simulator.wait_until("the WebSocket port", lambda: port_open(simulator_port))
        prometheus_port = free_port()
        argv = [
            sys.executable, "-m", "tradebot.cli", "up",
            "--kafka", kafka.bootstrap, "--redis", redis.url,
            "--source", f"ws://127.0.0.1:{simulator_port}", "--symbols", SYMBOL,
            "--api-port", str(free_port()), "--dashboard-port", str(free_port()),
            "--prometheus", "--prometheus-port", str(prometheus_port), "--prometheus-interval", "1",
            "--scrape", f"operator=127.0.0.1:{operator.metrics_port}",
        ]  # fmt: skip
        for sid, params in STRATEGIES.items():
            argv += ["--strategy", f"{sid}={json.dumps(params)}"]
        up = ServerProcess("tradebot-up", argv, root, env=env, cwd=REPO_ROOT)
        processes.append(up)
        up.wait_until(
            "Prometheus ready", lambda: http_ok(f"http://127.0.0.1:{prometheus_port}/-/ready"), timeout=120
        )
        yield Monitored(f"http://127.0.0.1:{prometheus_port}", up, simulator, simulator_metrics_port)
    finally:
        for process in reversed(processes):
            process.stop()
        for server in (redis, kafka):
            if server is not None:
                server.process.stop()
        kube_apiserver.kubectl("delete", "namespace", "monitoring-e2e", "--wait=false")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def replayed(monitored: Monitored) -> Monitored:
    """The whole replay went through the strategies and Prometheus has scraped the result."""
    expected = float(ROWS * len(STRATEGIES))

    def all_ticks_processed() -> bool:
        result = monitored.query("sum(tradebot_strategy_ticks_total)")
        return bool(result) and float(result[0]["value"][1]) == expected

    eventually(f"{expected:.0f} ticks processed by the strategies", all_ticks_processed, timeout=180)
    eventually(
        "fills scraped", lambda: monitored.query("sum(tradebot_executor_orders_filled_total) > 0"), timeout=90
    )
    return monitored


def test_every_target_is_up_and_exposes_exactly_the_catalogue(replayed: Monitored) -> None:
    def targets_up() -> list[dict[str, Any]] | None:
        active: list[dict[str, Any]] = replayed.api("targets")["activeTargets"]
        return active if active and all(t["health"] == "up" for t in active) else None

    targets = eventually("every target up", targets_up, timeout=90)
    jobs = {target["labels"]["job"] for target in targets}
    services = {"simulator", "feed", "strategy", "executor", "api", "dashboard", "operator"}
    # The simulator here is the test's own source, not one of `up`'s services.
    assert jobs == {f"tradebot-{s}" for s in services - {"simulator"}}, jobs
    entries = catalogue()
    for target in targets:
        service = target["labels"]["job"].removeprefix("tradebot-")
        sections = {service} if service == "operator" else {service, EVERY_SERVICE}
        expected = {e.name: e for e in entries if e.section in sections}
        exposed = exposition(target["scrapeUrl"])
        assert set(exposed) - set(expected) == set(), f"{service} exposes metrics the catalogue lacks"
        assert set(expected) - set(exposed) == set(), f"{service} lacks catalogued metrics"
        for name, (kind, label_sets) in exposed.items():
            assert kind == expected[name].type, (service, name, kind)
            for labels in label_sets:
                assert labels == expected[name].labels, (service, name, sorted(labels))
    # The simulator is a service too: scrape it directly.
    exposed = exposition(f"http://127.0.0.1:{replayed.simulator_metrics_port}/metrics")
    assert set(exposed) == {e.name for e in entries if e.section in {"simulator", EVERY_SERVICE}}


def _has_finite_value(monitored: Monitored, promql: str) -> Callable[[], list[dict[str, Any]]]:
    """A probe: the series of `promql` that have a finite value (NaN, e.g. a quantile of nothing, is no data)."""

    def probe() -> list[dict[str, Any]]:
        return [s for s in monitored.query(promql) if math.isfinite(float(s["value"][1]))]

    return probe


def test_every_recording_rule_returns_data(replayed: Monitored) -> None:
    rules = yaml.safe_load(RULES.read_text())
    records = [rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule]
    assert records
    for record in records:
        eventually(f"recording rule {record} to have data", _has_finite_value(replayed, record), timeout=60)


def test_every_dashboard_query_returns_data(replayed: Monitored) -> None:
    queries = panel_queries()
    assert queries
    for title, expr in queries:
        promql = expr
        for variable, value in GRAFANA_VARIABLES.items():
            promql = promql.replace(variable, value)
        assert "$" not in promql, (title, promql)
        eventually(
            f"panel {title!r} ({promql}) to have data", _has_finite_value(replayed, promql), timeout=60
        )


def test_stopping_the_source_makes_the_feed_alert_pending(replayed: Monitored) -> None:
    def feed_alerts() -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = replayed.api("alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "TradebotFeedDisconnected"]

    eventually("the feed connected", lambda: replayed.query("tradebot_feed_connected == 1"), timeout=90)
    assert feed_alerts() == [], "the feed alert is active before any fault"
    replayed.simulator.stop()
    pending = eventually("TradebotFeedDisconnected pending", feed_alerts, timeout=60)
    assert [alert["state"] for alert in pending] == ["pending"]
    assert replayed.up.running, "tradebot up must keep running when its source goes away"
