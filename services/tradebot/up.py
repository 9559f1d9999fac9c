"""`tradebot up`: the whole live pipeline on this machine.

- `--embedded`: simulator, feed, strategies, executor and API in one process over the in-memory bus
  and store (what `make demo` runs); the dashboard is a Streamlit subprocess.
- otherwise: each service as its own process (`tradebot <service>`), against `--kafka` and `--redis`.
- `--source URL`: the feed reads this price source (an exchange, or a simulator run elsewhere) instead of
  a simulator started here.
- with sinks in TRADEBOT_NOTIFIER_SINKS, the notifier too (its own process, or embedded like the pipeline).
- `--prometheus`: also a local Prometheus scraping every service and evaluating the alerting and
  recording rules of `manifests/monitoring/`.
Ctrl-C (or SIGTERM) stops everything cleanly; a service that stops or fails stops everything too.

Both modes start from one table (`services`): each row is a service, the command that runs it, and its
own settings class read like the service reads it, with `up`'s flags on top. A process gets its row's
settings as its environment (`ServiceSettings.to_env`); `--embedded` hands them to the same `run_*` the
service's command runs, with the in-memory bus and store. A setting added to a service reaches both modes
with no edit here; a flag of `up` that sets it is one argument in the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from tradebot.adapters.bus import Bus
from tradebot.adapters.connect import Wiring
from tradebot.core.params import RiskLimits, StrategyParams
from tradebot.kit.children import owned_child
from tradebot.kit.ports import free_port, reserve_ports
from tradebot.kit.prometheus import LocalPrometheus, default_rules_file
from tradebot.kit.settings import ServiceSettings, load_settings_or_exit

if TYPE_CHECKING:
    from tradebot.simulator.command import SimulatorSettings

S = TypeVar("S", bound=ServiceSettings)
logger = logging.getLogger(__name__)

DEFAULT_SYMBOLS = "AAPL,MSFT,GOOG,AMZN,TSLA"


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedded", action="store_true", help="one process, in-memory bus and store; no servers needed"
    )
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="Kafka bootstrap servers (not embedded)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (not embedded)")
    parser.add_argument(
        "--replay", metavar="FILE", help="replay this CSV through the simulator instead of random walks"
    )
    parser.add_argument(
        "--until-done",
        action="store_true",
        help="with --replay: exit 0 once every tick is processed and every order answered, printing one JSON"
        " summary (the fills and trades of each strategy) on stdout",
    )
    parser.add_argument("--speed", default="max", help="replay speed: multiple of real time, or 'max'")
    parser.add_argument(
        "--live-timestamps",
        action="store_true",
        help="stamp replayed ticks with the time they are sent (the file sets prices and pace)",
    )
    parser.add_argument("--symbol", default="ASSET", help="symbol of the replayed series")
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="symbols of the random walks")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between random-walk rounds")
    parser.add_argument(
        "--strategy",
        action="append",
        metavar="ID=JSON",
        default=[],
        help='a strategy: id and parameters, e.g. fast=\'{"short-window":5,"long-window":20}\' (the names of '
        "`tradebot backtest`'s flags, camelCase or snake_case); repeatable",
    )
    parser.add_argument(
        "--source",
        metavar="URL",
        help="WebSocket price source for the feed instead of a simulator started here",
    )
    parser.add_argument(
        "--source-codec",
        choices=["simulator", "binance"],
        default="simulator",
        help="message format of --source",
    )
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a Prometheus scraping every service (with our rules)",
    )
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument(
        "--prometheus-interval", type=float, default=5.0, help="scrape and rule evaluation interval, seconds"
    )
    parser.add_argument(
        "--scrape",
        action="append",
        metavar="JOB=HOST:PORT",
        default=[],
        help="another target for --prometheus, e.g. operator=127.0.0.1:9091; repeatable",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--simulator-port", type=int, default=6789)
    parser.add_argument("--dashboard-port", type=int, default=8501)
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the Streamlit dashboard")
    parser.add_argument("--commission-pct", type=float, default=0.0)
    parser.add_argument("--slippage-bps", type=float, default=0.0)
    parser.add_argument(
        "--api-token",
        default=os.environ.get("TRADEBOT_API_TOKEN") or None,
        help="bearer token for halt/resume (default: $TRADEBOT_API_TOKEN, else a new random one each run, printed)",
    )


def session_token(args: argparse.Namespace) -> str:
    """The run's halt/resume token: the one given, else a fresh random one. A fixed default would let any
    web page a developer opens halt their local instance."""
    if not args.api_token:
        args.api_token = secrets.token_urlsafe(32)
    token: str = args.api_token
    return token


def dashboard_origins(args: argparse.Namespace) -> str:
    """CORS origins for the api: only the local dashboard's (none without one); the browser names the page's
    host as typed, so both spellings of the loopback address."""
    if args.no_dashboard:
        return ""
    host = _reachable(args.host)
    hosts = [host, "localhost"] if host == "127.0.0.1" else [host]
    return ",".join(f"http://{name}:{args.dashboard_port}" for name in hosts)


def parse_strategies(specs: list[str]) -> list[tuple[str, StrategyParams]]:
    if not specs:
        return [
            ("sma-fast", StrategyParams(short_window=5, long_window=20, stop_loss_pct=2.0, qty_step=1.0)),
            (
                "ema-slow",
                StrategyParams(ma_type="ema", short_window=10, long_window=40, trailing_stop_pct=3.0),
            ),
        ]
    parsed = []
    for spec in specs:
        name, sep, raw = spec.partition("=")
        if not sep:
            raise SystemExit(f"tradebot up: error: --strategy {spec!r}: use ID=JSON")
        try:
            data = json.loads(raw or "{}")
        except json.JSONDecodeError as exc:
            raise SystemExit(f"tradebot up: error: --strategy {name}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SystemExit(f"tradebot up: error: --strategy {name}: the parameters must be a JSON object")
        try:
            params = StrategyParams.model_validate(from_flag_names(data))
        except ValidationError as exc:
            problems = "\n".join(f"  {problem}" for problem in describe_params_error(exc))
            raise SystemExit(f"tradebot up: error: --strategy {name}:\n{problems}") from None
        parsed.append((name, params))
    return parsed


# `tradebot backtest` flags whose parameter has another name, or sits in `risk`.
_FLAG_FIELDS = {"ma": "ma_type"}
_RISK_FIELDS = set(RiskLimits.model_fields)


def from_flag_names(data: dict[str, Any]) -> dict[str, Any]:
    """The parameters with the backtest's kebab-case flag names (`short-window`, `ma`, `cooldown-bars`) as
    the model's own; camelCase and snake_case keys pass unchanged."""
    params: dict[str, Any] = {}
    risk_from_flags: dict[str, Any] = {}
    for key, value in data.items():
        if "-" not in key and key not in _FLAG_FIELDS:
            params[key] = _snake_keys(value) if key == "risk" else value
            continue
        field = _FLAG_FIELDS.get(key, key.replace("-", "_"))
        if field in _RISK_FIELDS and field not in StrategyParams.model_fields:
            risk_from_flags[field] = value  # a flat flag of the backtest, nested in the model
        else:
            params[field] = _snake_keys(value) if field == "risk" else value
    if risk_from_flags:
        risk = params.get("risk", {})
        params["risk"] = {**risk, **risk_from_flags} if isinstance(risk, dict) else risk
    return params


def _snake_keys(value: Any) -> Any:
    return {key.replace("-", "_"): v for key, v in value.items()} if isinstance(value, dict) else value


def describe_params_error(exc: ValidationError) -> list[str]:
    """One line per problem: the parameter in flag spelling, the flag that sets it, the reason, the value."""
    problems = []
    for error in exc.errors(include_url=False):
        location = [to_snake(str(part)) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not location:  # a rule across fields (e.g. short-window < long-window)
            problems.append(message)
            continue
        name = ".".join(part.replace("_", "-") for part in location)
        if error["type"] == "extra_forbidden":
            problems.append(f"{name}: unknown parameter (got {error['input']!r})")
            continue
        flag = _flag_of(location)
        where = f"{name} ({flag})" if flag else name
        shown = "" if error["type"] == "missing" else f" (got {error['input']!r})"
        problems.append(f"{where}: {message}{shown}")
    return problems


def _flag_of(location: list[str]) -> str | None:
    """The `tradebot backtest` flag that sets this parameter, if one does."""
    head = location[0]
    if head == "ma_type":
        return "--ma"
    if head == "sizing":
        return "--sizing"
    if head == "risk" and len(location) > 1:
        head = location[1]
    if head == "risk" or (head not in StrategyParams.model_fields and head not in _RISK_FIELDS):
        return None
    return "--" + head.replace("_", "-")


def run(args: argparse.Namespace) -> int:
    strategies = parse_strategies(args.strategy)
    reserve_ports(args.api_port, args.simulator_port, args.dashboard_port, args.prometheus_port)
    if args.replay and not Path(args.replay).is_file():
        print(f"tradebot up: error: --replay {args.replay}: no such file", file=sys.stderr)
        return 2
    if args.replay and args.source:
        print("tradebot up: error: --replay and --source exclude each other", file=sys.stderr)
        return 2
    if args.until_done and not args.replay:
        print("tradebot up: error: --until-done needs --replay FILE", file=sys.stderr)
        return 2
    if args.until_done:
        args.no_dashboard = True  # a batch run: nobody watches
        # stdout carries the summary alone: everything else written to it (our logs, the services') goes
        # to stderr from here on, the summary to a copy of the original stdout.
        global _summary_out
        sys.stdout.flush()
        _summary_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    for spec in args.scrape:
        job, sep, target = spec.partition("=")
        if not sep or not job or ":" not in target:
            print(f"tradebot up: error: --scrape {spec!r}: use JOB=HOST:PORT", file=sys.stderr)
            return 2
    session_token(args)
    table = services(args, strategies)
    if args.embedded:
        return run_embedded(args, table)
    return run_processes(args, table)


# -- the one table both modes start from -----------------------------------------------------------
@dataclass(frozen=True)
class Service(Generic[S]):
    """A row of the table `tradebot up` starts from: a service and the settings it runs with."""

    name: str  # unique: `strategy-<id>` for each strategy
    command: str  # `tradebot <command>` runs it as a process
    settings: S
    # How `--embedded` runs it inside its own process, with the in-memory bus and store; None: it is
    # a process in both modes (the dashboard), or the embedded process's own HTTP app (the api).
    embedded: Callable[[S, Wiring], Coroutine[Any, Any, None]] | None = None
    argv: tuple[str, ...] = ()  # the command's flags, besides its settings
    supervised: bool = True  # when it stops, everything stops (the dashboard is not: trading goes on)


def services(args: argparse.Namespace, strategies: list[tuple[str, StrategyParams]]) -> list[Service[Any]]:
    """What runs, with which settings: every service's own settings class, read from the environment like
    the service itself does, with what `up`'s flags decide on top. A process gets these settings as its
    environment (`ServiceSettings.to_env`), `--embedded` passes them to the service's `run_*`, so both
    modes run every service with the same settings."""
    from tradebot.api.app import ApiSettings
    from tradebot.dashboard.settings import DashboardSettings
    from tradebot.executor.command import ExecutorSettings, run_executor
    from tradebot.feed.command import FeedSettings, run_feed
    from tradebot.notifier.command import NotifierSettings, run_notifier
    from tradebot.simulator.command import SimulatorSettings
    from tradebot.strategy.command import StrategySettings, run_strategy

    def settings(cls: type[S], http_port: int | None = None, **values: Any) -> S:
        # Each its own name: a TRADEBOT_SERVICE_NAME in the environment names one service, not all.
        name = cls.model_fields["service_name"].default
        return load_settings_or_exit(
            cls, service_name=name, http_host=args.host, http_port=http_port or free_port(), **values
        )

    pipeline = {
        "kafka_bootstrap": args.kafka,
        "redis_url": args.redis,
        "commission_pct": args.commission_pct,
        "slippage_bps": args.slippage_bps,
    }
    symbols = args.symbol if args.replay else args.symbols
    local = _reachable(args.host)
    table: list[Service[Any]] = []
    if not args.source:
        simulator = settings(
            SimulatorSettings,
            simulator_host=args.host,
            simulator_port=args.simulator_port,
            symbols=args.symbols,
            simulator_interval_s=args.interval,
            simulator_replay=args.replay,
            simulator_replay_symbol=args.symbol,
            simulator_replay_speed=args.speed,
            simulator_live_timestamps=args.live_timestamps,
        )
        table.append(Service("simulator", "simulator", simulator, _simulator_in_process))
    table.append(Service("executor", "executor", settings(ExecutorSettings, **pipeline), run_executor))
    for sid, params in strategies:
        strategy = settings(
            StrategySettings, **pipeline, strategy_id=sid, strategy_symbols=symbols, strategy_params=params
        )
        table.append(Service(f"strategy-{sid}", "strategy", strategy, run_strategy))
    feed = settings(
        FeedSettings,
        **pipeline,
        feed_url=args.source or f"ws://{local}:{args.simulator_port}",
        feed_source=args.source_codec,
        symbols=symbols,
    )
    table.append(Service("feed", "feed", feed, run_feed))
    notifier = settings(NotifierSettings, **pipeline)
    if notifier.notifier_sinks:  # TRADEBOT_NOTIFIER_SINKS: nothing to notify, nothing to run
        table.append(Service("notifier", "notifier", notifier, run_notifier))
    api = settings(
        ApiSettings, args.api_port, **pipeline, api_token=args.api_token, cors_origins=dashboard_origins(args)
    )
    table.append(Service("api", "api", api))
    if not args.no_dashboard:
        # The developer's own dashboard on their own machine: it gets the run's token to halt and resume.
        dashboard = settings(
            DashboardSettings, api_url=f"http://{local}:{args.api_port}", api_token=args.api_token
        )
        argv = ("--port", str(args.dashboard_port), "--host", args.host)
        table.append(Service("dashboard", "dashboard", dashboard, argv=argv, supervised=False))
    return table


async def _simulator_in_process(settings: SimulatorSettings, wiring: Wiring) -> None:
    from tradebot.simulator.command import serve_simulator

    await serve_simulator(settings, wiring.registry, wiring.shutdown)


# -- embedded ----------------------------------------------------------------------------------------
def run_embedded(args: argparse.Namespace, table: list[Service[Any]]) -> int:
    """The services with an embedded run in this process over one in-memory bus and store, served by the
    api's app (`/metrics` and `/readyz` cover them all); the others as processes."""
    from tradebot.adapters.memory_bus import MemoryBus
    from tradebot.adapters.memory_store import MemoryStore
    from tradebot.api.app import ApiSettings, create_api
    from tradebot.kit.app import readiness_of
    from tradebot.kit.lifecycle import ShutdownEvent, run_service

    api = next(row for row in table if row.command == "api")
    assert isinstance(api.settings, ApiSettings)
    settings = api.settings.model_copy(update={"service_name": "tradebot-up"})
    store = MemoryStore()
    bus = MemoryBus()
    app = create_api(settings, store, bus=bus)

    async def main(shutdown: ShutdownEvent) -> None:
        wiring = Wiring(bus, store, app.state.registry, readiness_of(app), shutdown)
        tasks = {
            asyncio.create_task(row.embedded(row.settings, wiring), name=row.name): row.name
            for row in table
            if row.embedded is not None
        }
        stopping = asyncio.create_task(shutdown.wait())
        processes: list[Running] = []
        prometheus: LocalPrometheus | None = None
        try:
            for row in table:
                if row.embedded is None and row is not api:
                    processes.append(start_process(row))
            targets = {"up": args.api_port, **{p.name: p.port for p in processes}}
            prometheus = await asyncio.to_thread(start_prometheus, args, targets)
            print_endpoints(args, strategies_in(table), embedded=True, prometheus=prometheus)
            if args.until_done:
                metrics = [f"http://{_reachable(args.host)}:{args.api_port}/metrics"]
                replay = ReplayDone(args.replay, strategies_in(table), bus, metrics)
                tasks[asyncio.create_task(_until_done(replay, shutdown), name="until-done")] = "until-done"
            done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopping}:
                if tasks[task] == "until-done" and task.exception() is None:
                    shutdown.set("replay done")
                    continue
                # A service that stops on its own stops everything, as its process would in process mode.
                shutdown.set(f"{tasks[task]} stopped")
        finally:
            shutdown.set("tradebot up stopping")
            stopping.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for process in reversed(processes):
                await asyncio.to_thread(stop_process, process.popen)
            if prometheus is not None:
                await asyncio.to_thread(prometheus.stop)
        failed = [error for error in outcomes if isinstance(error, BaseException)]
        for name, error in zip(tasks.values(), outcomes, strict=True):
            if isinstance(error, BaseException):
                logger.error("service failed", extra={"service": name}, exc_info=error)
        if failed:
            raise failed[0]

    return run_service(main, settings, app=app)


# -- separate processes ----------------------------------------------------------------------------
@dataclass
class Running:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    supervised: bool


def start_process(row: Service[Any]) -> Running:
    """`tradebot <command>` with the row's settings as its environment (on top of ours)."""
    env = dict(os.environ)
    for name, value in row.settings.to_env().items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    popen = subprocess.Popen(
        [sys.executable, "-m", "tradebot.cli", row.command, *row.argv], env=env, **owned_child()
    )
    return Running(row.name, row.settings.http_port, popen, row.supervised)


def run_processes(args: argparse.Namespace, table: list[Service[Any]]) -> int:
    processes: list[Running] = []
    prometheus: LocalPrometheus | None = None
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    done: ReplayDone | None = None
    try:
        for row in table:
            processes.append(start_process(row))
        health = {p.name: p.port for p in processes if p.supervised}
        prometheus = start_prometheus(args, {p.name: p.port for p in processes})
        print_endpoints(args, strategies_in(table), embedded=False, health=health, prometheus=prometheus)
        if args.until_done:
            from tradebot.adapters.kafka import KafkaBus

            metrics = [
                f"http://{_reachable(args.host)}:{p.port}/metrics"
                for p in processes
                if p.name.startswith("strategy-")
            ]
            done = ReplayDone(args.replay, strategies_in(table), KafkaBus(args.kafka), metrics)
        while not stopping:
            if done is not None and done.check():
                print_summary(done)
                break
            for running in processes:
                if running.supervised and running.popen.poll() is not None:
                    print(
                        f"tradebot up: {running.name} exited with {running.popen.returncode}; stopping everything",
                        file=sys.stderr,
                    )
                    stopping = True
                    code = 1
            time.sleep(0.2)
    finally:
        for running in reversed(processes):
            stop_process(running.popen)
        if prometheus is not None:
            prometheus.stop()
        if done is not None:
            done.bus.close()
    return code


# -- shared -----------------------------------------------------------------------------------------
def strategies_in(table: list[Service[Any]]) -> list[str]:
    return [row.name.removeprefix("strategy-") for row in table if row.command == "strategy"]


def _reachable(host: str) -> str:
    """The address to connect to a server listening on `host` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def start_prometheus(args: argparse.Namespace, ports: dict[str, int]) -> LocalPrometheus | None:
    """With `--prometheus`: a Prometheus scraping `ports` (process name -> its HTTP port) and `--scrape`
    targets, one job per service (`tradebot-<service>`; every strategy process is one `tradebot-strategy`)."""
    if not args.prometheus:
        return None
    host = _reachable(args.host)
    jobs: dict[str, list[str]] = {}
    for name, port in ports.items():
        service = "strategy" if name.startswith("strategy-") else name
        jobs.setdefault(f"tradebot-{service}", []).append(f"{host}:{port}")
    for spec in args.scrape:
        job, _, target = spec.partition("=")
        jobs.setdefault(job if job.startswith("tradebot") else f"tradebot-{job}", []).append(target)
    rules = default_rules_file()
    if rules is None:
        print("tradebot up: no rules file found; Prometheus runs without alerts", file=sys.stderr)
    prometheus = LocalPrometheus(
        jobs,
        host=host,
        port=args.prometheus_port,
        interval_s=args.prometheus_interval,
        rule_files=[rules] if rules else [],
    )
    prometheus.start()
    return prometheus


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def print_endpoints(
    args: argparse.Namespace,
    strategy_ids: list[str],
    *,
    embedded: bool,
    health: dict[str, int] | None = None,
    prometheus: LocalPrometheus | None = None,
) -> None:
    lines = [
        "tradebot is up"
        + (
            " (embedded: in-memory bus and store)"
            if embedded
            else f" (Kafka {args.kafka}, Redis {args.redis})"
        ),
        (
            f"  source     {args.source} ({args.source_codec})"
            if args.source
            else f"  simulator  ws://{args.host}:{args.simulator_port}"
            + (f"  replaying {args.replay}" if args.replay else "")
        ),
        f"  api        http://{args.host}:{args.api_port}  (docs: /docs, token for halt/resume: {args.api_token or 'none'})",
        f"  strategies {', '.join(strategy_ids)}",
    ]
    if not args.no_dashboard:
        lines.append(f"  dashboard  http://{args.host}:{args.dashboard_port}")
    if health:
        lines.append("  health     " + ", ".join(f"{name} :{port}" for name, port in health.items()))
    if prometheus is not None:
        lines.append(f"  prometheus {prometheus.url}  (alerts: {prometheus.url}/alerts)")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)


# -- --until-done ------------------------------------------------------------------------------------
class ReplayDone:
    """When a replay is over: every strategy has processed every tick of the file (its ticks counter, read
    from its /metrics) and every order it sent has its answer on `fills`. A fresh pipeline is assumed (its
    topics hold this run only)."""

    def __init__(self, replay: str, strategy_ids: list[str], bus: Bus, metrics_urls: list[str]) -> None:
        from tradebot.backtest.data import load_market_data

        self.ticks = len(load_market_data(replay))
        self.strategy_ids = strategy_ids
        self.bus = bus
        self.metrics_urls = metrics_urls
        self._fills: list[dict[str, Any]] = []

    def counters(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per strategy, from the strategies' /metrics: ticks processed and orders sent."""
        import re
        import urllib.request

        ticks: dict[str, float] = {}
        orders: dict[str, float] = {}
        for url in self.metrics_urls:
            try:
                with urllib.request.urlopen(url, timeout=2.0) as answer:
                    text = answer.read().decode()
            except OSError:
                continue  # not listening yet
            for name, sid, value in re.findall(
                r'^tradebot_strategy_(ticks|orders)_total\{[^}]*strategy="([^"]+)"[^}]*\} (\S+)$', text, re.M
            ):
                found = ticks if name == "ticks" else orders
                found[sid] = found.get(sid, 0.0) + float(value)
        return ticks, orders

    def check(self) -> bool:
        """Every tick processed by every strategy, and as many answers on `fills` as each sent orders."""
        from tradebot.adapters.topics import FILLS

        ticks, orders = self.counters()
        if any(ticks.get(sid, 0.0) < self.ticks for sid in self.strategy_ids):
            return False
        fills = [json.loads(r.value) for r in self.bus.read_all(FILLS, timeout=10.0)]
        answered = dict.fromkeys(self.strategy_ids, 0)
        for record in fills:
            sid = record["order"]["strategy_id"]
            answered[sid] = answered.get(sid, 0) + 1
        if any(answered[sid] != orders.get(sid, 0.0) for sid in self.strategy_ids):
            return False
        self._fills = fills
        return True

    def summary(self) -> dict[str, Any]:
        """Per strategy: its fills, and its round trips with the backtester's trade fields."""
        per: dict[str, Any] = {}
        for sid in self.strategy_ids:
            mine = [f for f in self._fills if f["order"]["strategy_id"] == sid]
            per[sid] = {"fills": len(mine), "trades": _trades(mine)}
        return {"ticks": self.ticks, "strategies": per}


def _trades(fills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round trips from one strategy's filled records in order (refusals skipped); a position still open
    is not a trade yet."""
    trades: list[dict[str, Any]] = []
    opened: dict[str, Any] | None = None
    for record in fills:
        fill, order = record["fill"], record["order"]
        if fill["status"] != "filled":
            continue
        if opened is None:
            opened = record
            continue
        entry = opened["fill"]
        long = entry["side"] == "buy"
        pnl = (fill["price"] - entry["price"]) * entry["qty"] * (1 if long else -1)
        commission = entry["commission"] + fill["commission"]
        trades.append(
            {
                "entry_time": opened["order"]["ts"],
                "exit_time": order["ts"],
                "side": "long" if long else "short",
                "qty": entry["qty"],
                "entry_price": entry["price"],
                "exit_price": fill["price"],
                "pnl": pnl - commission,
                "exit_reason": order["reason"],
                "commission": commission,
            }
        )
        opened = None
    return trades


_summary_out: Any = None  # the original stdout under --until-done


def print_summary(done: ReplayDone) -> None:
    print(json.dumps(done.summary()), file=_summary_out or sys.stdout, flush=True)


async def _until_done(done: ReplayDone, shutdown: Any) -> None:
    while not await shutdown.sleep(0.5):
        if await asyncio.to_thread(done.check):
            print_summary(done)
            return
