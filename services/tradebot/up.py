"""`tradebot up`: the whole live pipeline on this machine.

- `--embedded`: simulator, feed, strategies, executor and API in one process over the in-memory bus
  and store (what `make demo` runs); the dashboard is a Streamlit subprocess.
- otherwise: each service as its own process (`tradebot <service>`), against `--kafka` and `--redis`.
- `--source URL`: the feed reads this price source (an exchange, or a simulator run elsewhere) instead of
  a simulator started here.
- `--prometheus`: also a local Prometheus scraping every service and evaluating the alerting and
  recording rules of `manifests/monitoring/`.
Ctrl-C (or SIGTERM) stops everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tradebot.core.params import StrategyParams
from tradebot.kit.prometheus import LocalPrometheus, default_rules_file

DEFAULT_SYMBOLS = "AAPL,MSFT,GOOG,AMZN,TSLA"
_TAKEN_PORTS: set[int] = set()  # see free_port


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedded", action="store_true", help="one process, in-memory bus and store; no servers needed"
    )
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="Kafka bootstrap servers (not embedded)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (not embedded)")
    parser.add_argument(
        "--replay", metavar="FILE", help="replay this CSV through the simulator instead of random walks"
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
        help='a strategy: id and parameters, e.g. fast={"shortWindow":5,"longWindow":20}; repeatable',
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
        default=os.environ.get("TRADEBOT_API_TOKEN", "demo-token"),
        help="bearer token for halt/resume (default: $TRADEBOT_API_TOKEN or 'demo-token')",
    )


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
            parsed.append((name, StrategyParams.model_validate_json(raw or "{}")))
        except ValueError as exc:
            raise SystemExit(f"tradebot up: error: --strategy {name}: {str(exc).splitlines()[0]}") from None
    return parsed


def run(args: argparse.Namespace) -> int:
    strategies = parse_strategies(args.strategy)
    _TAKEN_PORTS.update({args.api_port, args.simulator_port, args.dashboard_port, args.prometheus_port})
    if args.replay and not Path(args.replay).is_file():
        print(f"tradebot up: error: --replay {args.replay}: no such file", file=sys.stderr)
        return 2
    if args.replay and args.source:
        print("tradebot up: error: --replay and --source exclude each other", file=sys.stderr)
        return 2
    for spec in args.scrape:
        job, sep, target = spec.partition("=")
        if not sep or not job or ":" not in target:
            print(f"tradebot up: error: --scrape {spec!r}: use JOB=HOST:PORT", file=sys.stderr)
            return 2
    if args.embedded:
        return run_embedded(args, strategies)
    return run_processes(args, strategies)


# -- embedded ----------------------------------------------------------------------------------------
def run_embedded(args: argparse.Namespace, strategies: list[tuple[str, StrategyParams]]) -> int:
    from tradebot.adapters.memory_bus import MemoryBus
    from tradebot.adapters.memory_store import MemoryStore
    from tradebot.api.app import ApiSettings, create_api
    from tradebot.kit.lifecycle import ShutdownEvent, run_service
    from tradebot.kit.settings import load_settings_or_exit

    settings = load_settings_or_exit(
        ApiSettings,
        service_name="tradebot-up",
        http_host=args.host,
        http_port=args.api_port,
        api_token=args.api_token,
        commission_pct=args.commission_pct,
        slippage_bps=args.slippage_bps,
        cors_origins="*",
    )
    bus = MemoryBus()
    store = MemoryStore()
    app = create_api(settings, store)

    async def main(shutdown: ShutdownEvent) -> None:
        await run_pipeline_embedded(args, strategies, settings, bus, store, shutdown, app.state.registry)

    return run_service(main, settings, app=app)


async def run_pipeline_embedded(
    args: argparse.Namespace,
    strategies: list[tuple[str, StrategyParams]],
    settings: Any,
    bus: Any,
    store: Any,
    shutdown: Any,
    registry: Any,
) -> None:
    from tradebot.adapters.topics import pipeline_topics
    from tradebot.executor.broker import PaperBroker, RiskChecks
    from tradebot.executor.runner import ExecutorMetrics, ExecutorRunner
    from tradebot.feed.client import Feed, FeedMetrics
    from tradebot.feed.codecs import codec_for
    from tradebot.simulator.command import parse_speed
    from tradebot.simulator.server import GbmConfig, Metrics, PriceSimulator, ReplayConfig, start_server
    from tradebot.strategy.runner import StrategyMetrics, StrategyRunner

    bus.ensure_topics(pipeline_topics(settings.topic_partitions))
    symbols = [args.symbol] if args.replay else [s.strip() for s in args.symbols.split(",") if s.strip()]
    source: GbmConfig | ReplayConfig
    if args.replay:
        source = ReplayConfig(
            path=Path(args.replay),
            symbol=args.symbol,
            speed=parse_speed(args.speed),
            live_timestamps=args.live_timestamps,
        )
    else:
        source = GbmConfig(symbols=symbols, interval_s=args.interval)
    stop_walks = asyncio.Event()
    tasks = []
    server = None
    if not args.source:
        simulator = PriceSimulator(source, Metrics(registry))
        server = await start_server(simulator, args.host, args.simulator_port)
        if simulator.mode == "gbm":
            tasks.append(asyncio.create_task(simulator.broadcast_walks(stop_walks)))

    strategy_metrics = StrategyMetrics(registry)
    costs = settings.costs()
    runners = [
        StrategyRunner(
            strategy_id=sid,
            symbols=symbols,
            params=params,
            costs=costs,
            initial_cash=10_000.0,
            bus=bus,
            store=store,
            metrics=strategy_metrics,
        )
        for sid, params in strategies
    ]
    executor = ExecutorRunner(
        bus=bus,
        store=store,
        broker=PaperBroker(costs=costs, checks=RiskChecks(price_band_pct=None)),
        metrics=ExecutorMetrics(registry),
    )
    feed = Feed(
        codec=codec_for(args.source_codec),
        url=args.source or f"ws://{args.host}:{args.simulator_port}",
        symbols=symbols,
        producer=bus.producer("feed"),
        store=store,
        metrics=FeedMetrics(registry),
    )
    tasks += [asyncio.create_task(r.run(shutdown)) for r in runners]
    tasks.append(asyncio.create_task(executor.run(shutdown)))
    tasks.append(asyncio.create_task(feed.run(shutdown)))
    dashboard = None if args.no_dashboard else start_dashboard(args, f"http://{args.host}:{args.api_port}")
    targets = {"up": args.api_port, **({"dashboard": dashboard[1]} if dashboard else {})}
    prometheus = await asyncio.to_thread(start_prometheus, args, targets)
    print_endpoints(args, [sid for sid, _ in strategies], embedded=True, prometheus=prometheus)
    try:
        await shutdown.wait()
    finally:
        stop_walks.set()
        if server is not None:
            server.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if dashboard is not None:
            stop_process(dashboard[0])
        if prometheus is not None:
            await asyncio.to_thread(prometheus.stop)


# -- separate processes ----------------------------------------------------------------------------
def run_processes(args: argparse.Namespace, strategies: list[tuple[str, StrategyParams]]) -> int:
    base_env = {
        **os.environ,
        "TRADEBOT_KAFKA_BOOTSTRAP": args.kafka,
        "TRADEBOT_REDIS_URL": args.redis,
        "TRADEBOT_COMMISSION_PCT": str(args.commission_pct),
        "TRADEBOT_SLIPPAGE_BPS": str(args.slippage_bps),
        "TRADEBOT_LOG_JSON": os.environ.get("TRADEBOT_LOG_JSON", "true"),
    }
    symbols = args.symbol if args.replay else args.symbols
    tradebot = [sys.executable, "-m", "tradebot.cli"]
    specs: list[tuple[str, list[str], dict[str, str]]] = []
    if not args.source:
        simulator_args = ["simulator", "--port", str(args.simulator_port)]
        if args.replay:
            simulator_args += ["--replay", args.replay, "--speed", args.speed, "--symbol", args.symbol]
            if args.live_timestamps:
                simulator_args.append("--live-timestamps")
        specs.append(
            (
                "simulator",
                simulator_args,
                {"TRADEBOT_SYMBOLS": args.symbols, "TRADEBOT_SIMULATOR_INTERVAL_S": str(args.interval)},
            )
        )
    specs.append(("executor", ["executor"], {}))
    for sid, params in strategies:
        specs.append(
            (
                f"strategy-{sid}",
                ["strategy"],
                {
                    "TRADEBOT_STRATEGY_ID": sid,
                    "TRADEBOT_STRATEGY_SYMBOLS": symbols,
                    "TRADEBOT_STRATEGY_PARAMS": params.to_env_json(),
                },
            )
        )
    specs.append(
        (
            "feed",
            ["feed"],
            {
                "TRADEBOT_FEED_URL": args.source or f"ws://127.0.0.1:{args.simulator_port}",
                "TRADEBOT_FEED_SOURCE": args.source_codec,
                "TRADEBOT_SYMBOLS": symbols,
            },
        )
    )
    specs.append(("api", ["api"], {"TRADEBOT_API_TOKEN": args.api_token, "TRADEBOT_CORS_ORIGINS": "*"}))
    processes: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    for name, argv, extra in specs:
        port = args.api_port if name == "api" else free_port()
        env = {
            **base_env,
            **extra,
            "TRADEBOT_SERVICE_NAME": name.split("-")[0] if name.startswith("strategy-") else name,
            "TRADEBOT_HTTP_PORT": str(port),
            "TRADEBOT_HTTP_HOST": args.host,
        }
        processes.append((name, port, subprocess.Popen([*tradebot, *argv], env=env)))
    dashboard = None if args.no_dashboard else start_dashboard(args, f"http://{args.host}:{args.api_port}")
    health = {name: port for name, port, _ in processes}
    prometheus: LocalPrometheus | None = None
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        prometheus = start_prometheus(args, {**health, **({"dashboard": dashboard[1]} if dashboard else {})})
        print_endpoints(
            args, [sid for sid, _ in strategies], embedded=False, health=health, prometheus=prometheus
        )
        while not stopping:
            for name, _, process in processes:
                if process.poll() is not None:
                    print(
                        f"tradebot up: {name} exited with {process.returncode}; stopping everything",
                        file=sys.stderr,
                    )
                    stopping = True
                    code = 1
            time.sleep(0.2)
    finally:
        for _, _, process in reversed(processes):
            stop_process(process)
        if dashboard is not None:
            stop_process(dashboard[0])
        if prometheus is not None:
            prometheus.stop()
    return code


# -- shared -----------------------------------------------------------------------------------------
def start_dashboard(args: argparse.Namespace, api_url: str) -> tuple[subprocess.Popen[bytes], int]:
    """The Streamlit dashboard and the port of its health server (`/livez`, `/metrics`)."""
    health_port = free_port()
    env = {
        **os.environ,
        "TRADEBOT_API_URL": api_url,
        "TRADEBOT_HTTP_PORT": str(health_port),
        "TRADEBOT_HTTP_HOST": args.host,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tradebot.cli",
            "dashboard",
            "--port",
            str(args.dashboard_port),
            "--host",
            args.host,
        ],
        env=env,
    )
    return process, health_port


def start_prometheus(args: argparse.Namespace, ports: dict[str, int]) -> LocalPrometheus | None:
    """With `--prometheus`: a Prometheus scraping `ports` (process name -> its HTTP port) and `--scrape`
    targets, one job per service (`tradebot-<service>`; every strategy process is one `tradebot-strategy`)."""
    if not args.prometheus:
        return None
    host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
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


def free_port() -> int:
    """A free port, never one handed out before by this process nor one given on the command line: the
    kernel may offer a port again before the service it was meant for has bound it."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _TAKEN_PORTS:
            _TAKEN_PORTS.add(port)
            return port


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
        f"  api        http://{args.host}:{args.api_port}  (docs: /docs, token for halt/resume: {'set' if args.api_token else 'none'})",
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
