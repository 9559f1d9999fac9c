"""`tradebot simulator`: the WebSocket price source (the seed's dummy stock server, grown up)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from pydantic import Field

from tradebot.kit.app import create_service_app
from tradebot.kit.lifecycle import ShutdownEvent, run_service
from tradebot.kit.settings import ServiceSettings, load_settings_or_exit

logger = logging.getLogger(__name__)


class SimulatorSettings(ServiceSettings):
    service_name: str = "simulator"
    simulator_host: str = Field(default="0.0.0.0", min_length=1)
    simulator_port: int = Field(default=6789, ge=1, le=65535)
    symbols: str = Field(
        default="AAPL,MSFT,GOOG,AMZN,TSLA", min_length=1, description="Comma-separated symbols."
    )
    simulator_interval_s: float = Field(default=0.2, gt=0, le=60)
    simulator_drift: float = Field(default=0.05, ge=-10, le=10)
    simulator_volatility: float = Field(default=0.4, gt=0, le=20)
    simulator_step_s: float = Field(default=60.0, gt=0)
    simulator_seed: int = 0


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replay", metavar="FILE", help="replay this OHLCV CSV (closes as ticks) instead of random walks"
    )
    parser.add_argument("--speed", default="max", help="replay speed: a multiple of real time, or 'max'")
    parser.add_argument("--symbol", default="ASSET", help="symbol name for the replayed series")
    parser.add_argument(
        "--live-timestamps",
        action="store_true",
        help="stamp replayed ticks with the time they are sent (the file sets prices and pace)",
    )
    parser.add_argument("--port", type=int, help="WebSocket port (default TRADEBOT_SIMULATOR_PORT or 6789)")


def parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(
            f"tradebot simulator: error: --speed must be a number or 'max', got {text!r}"
        ) from None
    if value <= 0:
        raise SystemExit("tradebot simulator: error: --speed must be > 0")
    return value


def run(args: argparse.Namespace) -> int:
    from tradebot.simulator.server import GbmConfig, Metrics, PriceSimulator, ReplayConfig, start_server

    overrides = {"simulator_port": args.port} if args.port else {}
    settings = load_settings_or_exit(SimulatorSettings, **overrides)
    source: GbmConfig | ReplayConfig
    if args.replay:
        path = Path(args.replay)
        if not path.is_file():
            raise SystemExit(f"tradebot simulator: error: --replay {path}: no such file")
        source = ReplayConfig(
            path=path, symbol=args.symbol, speed=parse_speed(args.speed), live_timestamps=args.live_timestamps
        )
    else:
        source = GbmConfig(
            symbols=[s.strip() for s in settings.symbols.split(",") if s.strip()],
            interval_s=settings.simulator_interval_s,
            drift=settings.simulator_drift,
            volatility=settings.simulator_volatility,
            step_s=settings.simulator_step_s,
            seed=settings.simulator_seed,
        )
    app = create_service_app(settings)
    simulator = PriceSimulator(source, Metrics(app.state.registry))

    async def main(shutdown: ShutdownEvent) -> None:
        server = await start_server(simulator, settings.simulator_host, settings.simulator_port)
        logger.info(
            "simulator listening",
            extra={
                "url": f"ws://{settings.simulator_host}:{settings.simulator_port}",
                "mode": simulator.mode,
            },
        )
        stop = asyncio.Event()
        walks = asyncio.create_task(simulator.broadcast_walks(stop)) if simulator.mode == "gbm" else None
        await shutdown.wait()
        stop.set()
        if walks is not None:
            await walks
        server.close()
        await server.wait_closed()

    return run_service(main, settings, app=app)
