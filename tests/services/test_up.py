"""`tradebot up` runs every service with the settings the service would read on its own, the same in both
modes (issue 12.1): one table, each row's settings handed to a process as its environment or to the
service's `run_*` in `--embedded`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.adapters._wrapped_bus import WrappedBus, WrappedConsumer
from tests.monitoring.catalogue import EVERY_SERVICE, catalogue, exposition
from tests.plugins._proc import REPO_ROOT, ServerProcess, free_port
from tests.plugins.servers import KafkaBroker, RedisServer
from tests.plugins.webhooks import Receiver
from tests.services.test_broker import order
from tests.services.test_executor_metrics import until
from tradebot import up
from tradebot.adapters.bus import Bus, Consumer, Producer, Record
from tradebot.adapters.connect import Wiring
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.topics import CONTROL, ORDERS, HaltCommand
from tradebot.core.models import OrderReason, Side
from tradebot.kit.health import Readiness
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.kit.settings import ServiceSettings

SAMPLE = REPO_ROOT / "data" / "historical_data.csv"
STRATEGY = {"shortWindow": 5, "longWindow": 20, "qtyStep": 1.0}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("TRADEBOT_") and key != "TRADEBOT_TOOLS_DIR":
            monkeypatch.delenv(key)
    return monkeypatch


def up_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    up.build_parser(parser)
    return parser.parse_args(list(argv))


def read_back(settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    """The settings a process of this service reads from the environment `tradebot up` gives it."""
    with monkeypatch.context() as env:
        for name, value in settings.to_env().items():
            if value is None:
                env.delenv(name, raising=False)
            else:
                env.setenv(name, value)
        return type(settings)()


def test_a_process_reads_the_settings_the_embedded_service_runs_with(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TRADEBOT_STRATEGY_INITIAL_CASH", "25000")
    clean_env.setenv("TRADEBOT_STRATEGY_BATCH_MAX", "250")
    clean_env.setenv("TRADEBOT_EXECUTOR_MAX_ORDER_QTY", "7.5")
    clean_env.setenv("TRADEBOT_EXECUTOR_INITIAL_CASH", "40000")
    clean_env.setenv("TRADEBOT_EXECUTOR_BATCH_MAX", "9")
    clean_env.setenv("TRADEBOT_SERVICE_NAME", "one-name")  # names one service, never all that up runs
    clean_env.setenv("TRADEBOT_FEED_BACKOFF_MAX_S", "3")
    clean_env.setenv("TRADEBOT_SIMULATOR_SEED", "42")
    args = up_args(
        "--replay", str(SAMPLE), "--symbol", "GOOG", "--commission-pct", "0.1",
        "--strategy", f"fast={json.dumps(STRATEGY)}", "--api-token", "t0ken",
    )  # fmt: skip
    table = up.services(args, up.parse_strategies(args.strategy))
    rows = {row.name: row for row in table}
    assert list(rows) == ["simulator", "executor", "strategy-fast", "feed", "api", "dashboard"]
    # The pipeline runs inside `--embedded`; the api is its HTTP app; the dashboard is a process in both.
    assert {name for name, row in rows.items() if row.embedded is not None} == {
        "simulator", "executor", "strategy-fast", "feed"
    }  # fmt: skip
    settings = {name: row.settings.model_dump() for name, row in rows.items()}
    # The environment reaches every service, in both modes (embedded used a literal 10,000, no batch
    # limit and no executor settings at all).
    assert settings["strategy-fast"]["strategy_initial_cash"] == 25_000.0
    assert settings["strategy-fast"]["strategy_batch_max"] == 250
    assert settings["executor"]["executor_max_order_qty"] == 7.5
    assert settings["executor"]["executor_initial_cash"] == 40_000.0
    assert settings["executor"]["executor_batch_max"] == 9
    assert settings["feed"]["feed_backoff_max_s"] == 3.0
    assert settings["simulator"]["simulator_seed"] == 42
    # up's flags on top.
    assert settings["strategy-fast"]["strategy_symbols"] == "GOOG"
    assert settings["executor"]["commission_pct"] == settings["strategy-fast"]["commission_pct"] == 0.1
    assert settings["simulator"]["simulator_replay"] == SAMPLE
    assert rows["api"].settings.http_port == args.api_port
    assert [row.settings.service_name for row in table] == [
        "simulator", "executor", "strategy", "feed", "api", "dashboard"
    ]  # fmt: skip
    ports = [row.settings.http_port for row in table]
    assert len(set(ports)) == len(ports)
    for row in table:
        assert read_back(row.settings, clean_env) == row.settings, row.name


def test_every_settings_field_survives_the_trip_through_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from pydantic import SecretStr

    from tradebot.api.app import ApiSettings
    from tradebot.core.params import StrategyParams
    from tradebot.strategy.command import StrategySettings

    odd = StrategySettings(
        strategy_params=StrategyParams(ma_type="ema", short_window=3, long_window=9, trailing_stop_pct=1.5),
        strategy_symbols="A,B",
        log_json=False,
        shutdown_grace_seconds=7.25,
    )
    assert read_back(odd, clean_env) == odd
    secret = ApiSettings(api_token=SecretStr("s3cret"), cors_origins="")
    assert read_back(secret, clean_env) == secret
    unset = read_back(ApiSettings(api_token=None), clean_env)
    assert isinstance(unset, ApiSettings)
    assert unset.api_token is None


@dataclass
class RunningUp:
    mode: str
    url: str  # the api
    strategy: str
    process: ServerProcess

    def metrics_url(self) -> str:
        """Where the executor's metrics are: the one HTTP port in `--embedded`, else the executor's own
        (as `up` prints it)."""
        if self.mode == "embedded":
            return f"{self.url}/metrics"
        found = re.search(r"executor :(\d+)", self.process.log_path.read_text())
        assert found is not None, "up printed no executor health port"
        return f"http://127.0.0.1:{found.group(1)}/metrics"


@pytest.fixture(params=["embedded", "processes"])
def running_up(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningUp]:
    """`tradebot up` (one process over memory, or one process per service over Kafka and Redis) replaying
    the sample, a strategy of 25,000 and an executor refusing every order above 0.5 (the strategy trades
    whole shares), both from the environment."""
    mode = request.param
    api_port = free_port()
    strategy = f"s{uuid.uuid4().hex[:8]}"  # the session's Kafka may hold other tests' orders
    argv = [
        sys.executable, "-m", "tradebot.cli", "up", "--no-dashboard",
        "--replay", str(SAMPLE), "--symbol", "GOOG", "--speed", "max",
        "--strategy", f"{strategy}={json.dumps(STRATEGY)}",
        "--api-port", str(api_port), "--simulator-port", str(free_port()),
    ]  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRADEBOT_") or k == "TRADEBOT_TOOLS_DIR"},
        "TRADEBOT_LOG_JSON": "false",
        "TRADEBOT_STRATEGY_INITIAL_CASH": "25000",
        "TRADEBOT_EXECUTOR_MAX_ORDER_QTY": "0.5",
    }
    if mode == "embedded":
        argv.append("--embedded")
    else:
        kafka: KafkaBroker = request.getfixturevalue("kafka")
        redis: RedisServer = request.getfixturevalue("redis_server")
        argv += ["--kafka", kafka.bootstrap, "--redis", redis.url]
        env["TRADEBOT_REDIS_PREFIX"] = strategy
    process = ServerProcess("tradebot-up", argv, tmp_path, env=env, cwd=REPO_ROOT)
    try:
        yield RunningUp(mode, f"http://127.0.0.1:{api_port}", strategy, process)
    finally:
        process.stop(timeout=30.0)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2.0)
    except httpx.HTTPError:
        return None


def test_both_modes_run_each_service_with_its_own_settings(running_up: RunningUp) -> None:
    up_, sid = running_up, running_up.strategy

    def fills() -> list[dict[str, object]]:
        response = _get(f"{up_.url}/fills?limit=5&strategy={sid}")
        return response.json()["items"] if response is not None and response.status_code == 200 else []

    up_.process.wait_until("the first fills", lambda: len(fills()) > 0, timeout=90)
    strategies = httpx.get(f"{up_.url}/strategies", timeout=5.0).json()["items"]
    assert [(s["id"], s["initial_cash"]) for s in strategies] == [(sid, 25_000.0)]
    assert {(f["status"], f["reject_code"]) for f in fills()} == {("rejected", "max_qty")}
    # The executor values the strategy against the cash it registered (nothing filled: equity is that).
    up_.process.wait_until(
        "the strategy's equity on the executor's /metrics",
        lambda: (
            f'tradebot_executor_equity{{strategy="{sid}"}} 25000.0'
            in (_get(up_.metrics_url()) or httpx.Response(0)).text
        ),
        timeout=30,
    )
    if up_.mode == "embedded":
        # /readyz covers the pipeline running inside: the strategy, the executor and the feed's source.
        ready = httpx.get(f"{up_.url}/readyz", timeout=5.0).json()
        assert ready["status"] == "ready"
        assert {"store", f"strategy-{sid}", "executor", "source"} <= set(ready["checks"])

    # Ctrl-C at a terminal signals the whole foreground process group. Each service must stop once, gracefully:
    # it used to get the terminal's SIGINT and then `up`'s SIGTERM, and took the second as "exit at once".
    os.killpg(up_.process.popen.pid, signal.SIGINT)
    assert up_.process.popen.wait(timeout=60) == 0, up_.process.log_tail()
    log = up_.process.log_path.read_text()
    assert "second signal" not in log, log
    services = (
        ("api", "feed", "strategy", "executor", "simulator") if up_.mode == "processes" else ("tradebot-up",)
    )
    stopped = [line for line in log.splitlines() if "service stopped" in line]
    assert len(stopped) >= len(services), log


class PollLimits(WrappedBus):
    """A bus whose consumers note the `max_records` of every poll, per consumer group."""

    def __init__(self, inner: Bus) -> None:
        super().__init__(inner)
        self.limits: dict[str, set[int]] = {}

    def consumer(self, group_id: str, topics: Sequence[str], **options: Any) -> Consumer:
        return NotingConsumer(
            super().consumer(group_id, topics, **options), self.limits.setdefault(group_id, set())
        )


class NotingConsumer(WrappedConsumer):
    def __init__(self, inner: Consumer, limits: set[int]) -> None:
        super().__init__(inner)
        self.limits = limits

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        self.limits.add(max_records)
        return self.inner.poll(timeout, max_records)


class Lingers(WrappedBus):
    """A bus noting the linger of every plain producer it makes, per client id."""

    def __init__(self, inner: Bus) -> None:
        super().__init__(inner)
        self.lingers: dict[str, int] = {}

    def producer(self, client_id: str, *, linger_ms: int = 1) -> Producer:
        self.lingers[client_id] = linger_ms
        return super().producer(client_id, linger_ms=linger_ms)


async def test_the_feed_batches_its_ticks_for_as_long_as_its_settings_say(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from tradebot.feed.command import FeedSettings, run_feed

    assert FeedSettings().feed_linger_ms == 5
    clean_env.setenv("TRADEBOT_FEED_LINGER_MS", "-1")
    with pytest.raises(ValidationError, match="feed_linger_ms"):
        FeedSettings()
    clean_env.setenv("TRADEBOT_FEED_LINGER_MS", "12")
    settings = FeedSettings(feed_url=f"ws://127.0.0.1:{free_port()}")  # nobody there: it keeps retrying
    bus = Lingers(MemoryBus())
    shutdown = ShutdownEvent()
    task = asyncio.create_task(
        run_feed(settings, Wiring(bus, MemoryStore(), CollectorRegistry(), Readiness(), shutdown))
    )
    try:
        await until("the feed's producer", lambda: "feed" in bus.lingers)
        assert bus.lingers == {"feed": 12}
    finally:
        shutdown.set()
        await task


async def test_the_run_functions_both_modes_share_use_every_setting_they_are_given(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """What `run_embedded` and a service process both call: initial cash and batch limit reach the
    strategy and the executor (embedded mode used to run them with a literal 10,000 and the defaults)."""
    from tradebot.executor.command import ExecutorSettings, run_executor
    from tradebot.strategy.command import StrategySettings, run_strategy

    bus = PollLimits(MemoryBus())
    store = MemoryStore()
    registry = CollectorRegistry()
    shutdown = ShutdownEvent()
    wiring = Wiring(bus, store, registry, Readiness(), shutdown)
    executor = ExecutorSettings(executor_initial_cash=40_000.0, executor_batch_max=9)
    strategy = StrategySettings(strategy_id="s1", strategy_initial_cash=25_000.0, strategy_batch_max=250)
    tasks = [
        asyncio.create_task(run_executor(executor, wiring)),
        asyncio.create_task(run_strategy(strategy, wiring)),
    ]
    try:
        await until(
            "both polling", lambda: bool(bus.limits.get("executor") and bus.limits.get("strategy-s1"))
        )
        assert bus.limits["executor"] == {9}
        assert bus.limits["strategy-s1"] == {250}
        assert [(s["id"], s["initial_cash"]) for s in await store.strategies()] == [("s1", 25_000.0)]
        # A strategy that registered no cash of its own is valued against the executor's.
        await store.register_strategy("plain", {})
        made = order(Side.BUY, 10, 100.0, OrderReason.ENTRY_LONG, 1, strategy="plain")
        producer = bus.producer("test")
        producer.produce(ORDERS, made.model_dump_json().encode(), key=made.symbol.encode())
        producer.flush()
        await store.set_last_price("AAA", 90.0, datetime.now(UTC))

        def equity() -> float | None:
            return registry.get_sample_value("tradebot_executor_equity", {"strategy": "plain"})

        await until("plain marked at 90", lambda: equity() == 40_000.0 - 100.0)
    finally:
        shutdown.set()
        await asyncio.gather(*tasks)


def test_each_run_has_its_own_token_and_cors_admits_only_the_dashboard(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14.3: no fixed `demo-token` and no CORS `*`, so another web page cannot halt a local run."""
    from fastapi.testclient import TestClient

    from tradebot.api.app import create_api

    tokens = []
    for _ in range(2):
        args = up_args("--dashboard-port", "8765")
        tokens.append(up.session_token(args))
        rows = {row.name: row for row in up.services(args, up.parse_strategies([]))}
        api_token = rows["api"].settings.api_token.get_secret_value()
        assert api_token == tokens[-1]
        assert (
            rows["dashboard"].settings.api_token.get_secret_value() == api_token
        )  # the local dashboard can act
        up.print_endpoints(args, ["sma-fast"], embedded=True)
        assert f"token for halt/resume: {api_token}" in capsys.readouterr().out
    assert tokens[0] != tokens[1]
    assert all(len(token) >= 32 for token in tokens)

    dashboard_origin, elsewhere = "http://127.0.0.1:8765", "https://any-page.example"
    with TestClient(create_api(rows["api"].settings, MemoryStore())) as client:
        for origin, allowed in (
            (dashboard_origin, True),
            ("http://localhost:8765", True),
            (elsewhere, False),
        ):
            preflight = client.options(
                "/strategies/sma-fast/halt",
                headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
            )
            assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed, origin
        assert client.post("/strategies/sma-fast/halt", headers={"Origin": elsewhere}).status_code == 401
        wrong = {"Authorization": "Bearer demo-token"}
        assert client.post("/strategies/sma-fast/halt", headers=wrong).status_code == 403

    given = up_args("--api-token", "mine-" + "x" * 40, "--no-dashboard")
    assert up.session_token(given) == "mine-" + "x" * 40
    assert (
        up.services(given, up.parse_strategies([]))[-1].settings.cors_origins == ""
    )  # no dashboard, no CORS
    clean_env.setenv("TRADEBOT_API_TOKEN", "from-env-" + "y" * 40)
    assert up.session_token(up_args()) == "from-env-" + "y" * 40


def test_the_notifier_runs_only_with_sinks_and_gets_them_whole(clean_env: pytest.MonkeyPatch) -> None:
    """No sinks, no notifier; with TRADEBOT_NOTIFIER_SINKS it is a row of its own (a process, or embedded),
    and its sinks, secrets included, reach the process through the environment."""
    args = up_args("--no-dashboard")
    assert "notifier" not in {row.name for row in up.services(args, up.parse_strategies([]))}
    sinks = [
        {
            "name": "ops",
            "kind": "slack",
            "url": "https://hooks.example/T0/B0/s3cret",
            "strategies": ["sma-fast"],
        },
        {"name": "tg", "kind": "telegram", "bot_token": "1:tok3n", "chat_id": "-100", "events": ["halt"]},
    ]
    clean_env.setenv("TRADEBOT_NOTIFIER_SINKS", json.dumps(sinks))
    rows = {row.name: row for row in up.services(args, up.parse_strategies([]))}
    notifier = rows["notifier"]
    assert notifier.command == "notifier"
    assert notifier.embedded is not None  # `--embedded` runs it in its one process too
    assert read_back(notifier.settings, clean_env) == notifier.settings
    shown = json.dumps(notifier.settings.safe_dump())
    assert "s3cret" not in shown
    assert "tok3n" not in shown


def test_up_starts_the_notifier_as_its_own_process(
    clean_env: pytest.MonkeyPatch, kafka: KafkaBroker, redis_server: RedisServer, receiver: Receiver
) -> None:
    """The notifier's row, started the way `tradebot up` starts every service: a `tradebot notifier` process
    that becomes ready, posts a halt recorded on Kafka to the sink, and stops cleanly on SIGTERM."""
    sid = f"n{uuid.uuid4().hex[:8]}"
    sinks = [{"name": "ops", "kind": "slack", "url": receiver.url("/ops"), "strategies": [sid]}]
    clean_env.setenv("TRADEBOT_NOTIFIER_SINKS", json.dumps(sinks))
    clean_env.setenv("TRADEBOT_NOTIFIER_START", "earliest")  # the session's topics: only `sid` is wanted
    clean_env.setenv("TRADEBOT_NOTIFIER_GROUP", f"notifier-{sid}")
    clean_env.setenv("TRADEBOT_REDIS_PREFIX", sid)
    args = up_args("--no-dashboard", "--kafka", kafka.bootstrap, "--redis", redis_server.url)
    row = next(row for row in up.services(args, up.parse_strategies([])) if row.name == "notifier")
    running = up.start_process(row)
    try:
        ready_url = f"http://127.0.0.1:{running.port}/readyz"

        def ready() -> bool:
            answer = _get(ready_url)
            return answer is not None and answer.status_code == 200

        deadline = time.monotonic() + 60
        while not ready():
            assert running.popen.poll() is None, "the notifier exited"
            assert time.monotonic() < deadline, "the notifier never became ready"
            time.sleep(0.2)
        bus = KafkaBus(kafka.bootstrap)
        producer = bus.producer("up-notifier-test")
        halt = HaltCommand(strategy_id=sid, halted=True)
        producer.produce(CONTROL, halt.model_dump_json().encode(), key=halt.key())
        producer.flush()
        producer.close()
        bus.close()
        deadline = time.monotonic() + 30
        while not receiver.to("/ops"):
            assert time.monotonic() < deadline, "the halt never reached the sink"
            time.sleep(0.1)
        metrics_url = f"http://127.0.0.1:{running.port}/metrics"
        assert 'tradebot_notifier_sent_total{kind="slack",sink="ops"} 1.0' in httpx.get(metrics_url).text
        # Exactly what services/README.md catalogues for it, with the labels it lists.
        expected = {e.name: e for e in catalogue() if e.section in {"notifier", EVERY_SERVICE}}
        exposed = exposition(metrics_url)
        assert set(exposed) == set(expected)
        for name, (kind, label_sets) in exposed.items():
            assert kind == expected[name].type, name
            assert all(labels == expected[name].labels for labels in label_sets), name
    finally:
        up.stop_process(running.popen)
    assert running.popen.returncode == 0
    assert [r.body for r in receiver.to("/ops")] == [{"text": f"[{sid}] halted: no new entries"}]
