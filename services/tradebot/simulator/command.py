"""`tradebot simulator`: the WebSocket price source (the seed's dummy stock server, grown up)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from pydantic import Field, FilePath, field_validator

from tradebot.kit.app import create_service_app
from tradebot.kit.lifecycle import ShutdownEvent, run_service
from tradebot.kit.settings import ServiceSettings, comma_list, load_settings_or_exit

if TYPE_CHECKING:  # the server module loads numpy and pandas: only when a simulator runs
    from tradebot.simulator.server import GbmConfig, ReplayConfig

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
    simulator_replay: FilePath | None = Field(
        default=None, description="Replay this OHLCV CSV (closes as ticks) instead of random walks."
    )
    simulator_replay_symbol: str = Field(default="ASSET", min_length=1, description="Symbol of the replay.")
    simulator_replay_speed: str = Field(
        default="max", description="Replay speed: a multiple of real time, or 'max'."
    )
    simulator_live_timestamps: bool = Field(
        default=False,
        description="Stamp replayed ticks with the time they are sent (the file sets the pace).",
    )

    @field_validator("simulator_replay_speed")
    @classmethod
    def _speed(cls, value: str) -> str:
        speed_of(value)
        return value

    def source(self) -> GbmConfig | ReplayConfig:
        from tradebot.simulator.server import GbmConfig, ReplayConfig

        if self.simulator_replay is not None:
            return ReplayConfig(
                path=self.simulator_replay,
                symbol=self.simulator_replay_symbol,
                speed=speed_of(self.simulator_replay_speed),
                live_timestamps=self.simulator_live_timestamps,
            )
        return GbmConfig(
            symbols=comma_list(self.symbols),
            interval_s=self.simulator_interval_s,
            drift=self.simulator_drift,
            volatility=self.simulator_volatility,
            step_s=self.simulator_step_s,
            seed=self.simulator_seed,
        )


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--replay", metavar="FILE", help="replay this OHLCV CSV (closes as ticks) instead of random walks"
    )
    parser.add_argument("--speed", help="replay speed: a multiple of real time, or 'max' (the default)")
    parser.add_argument("--symbol", help="symbol name for the replayed series (default ASSET)")
    parser.add_argument(
        "--live-timestamps",
        action="store_true",
        help="stamp replayed ticks with the time they are sent (the file sets prices and pace)",
    )
    parser.add_argument("--port", type=int, help="WebSocket port (default TRADEBOT_SIMULATOR_PORT or 6789)")


def speed_of(text: str) -> float | None:
    """A replay speed: None for 'max', else a positive multiple of real time."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number or 'max', got {text!r}") from None
    if not value > 0:
        raise ValueError(f"must be > 0, got {text!r}")
    return value


def parse_speed(text: str) -> float | None:
    """`speed_of` for a command-line flag: a bad value exits 2 naming the flag."""
    try:
        return speed_of(text)
    except ValueError as exc:
        raise SystemExit(f"tradebot simulator: error: --speed {exc}") from None


async def serve_simulator(
    settings: SimulatorSettings, registry: CollectorRegistry, shutdown: ShutdownEvent
) -> None:
    """The WebSocket server until shutdown (random walks broadcast to every client, or a replay per client)."""
    from tradebot.simulator.server import Metrics, PriceSimulator, start_server

    simulator = PriceSimulator(settings.source(), Metrics.of(registry))
    server = await start_server(simulator, settings.simulator_host, settings.simulator_port)
    logger.info(
        "simulator listening",
        extra={"url": f"ws://{settings.simulator_host}:{settings.simulator_port}", "mode": simulator.mode},
    )
    stop = asyncio.Event()
    walks = asyncio.create_task(simulator.broadcast_walks(stop)) if simulator.mode == "gbm" else None
    try:
        await shutdown.wait()
    finally:
        stop.set()
        if walks is not None:
            await walks
        server.close()
        await server.wait_closed()


def run(args: argparse.Namespace) -> int:
    if args.replay and not Path(args.replay).is_file():
        raise SystemExit(f"tradebot simulator: error: --replay {args.replay}: no such file")
    if args.speed is not None:
        parse_speed(args.speed)
    flags = {
        "simulator_port": args.port,
        "simulator_replay": args.replay,
        "simulator_replay_speed": args.speed,
        "simulator_replay_symbol": args.symbol,
        "simulator_live_timestamps": args.live_timestamps or None,
    }
    settings = load_settings_or_exit(
        SimulatorSettings, **{name: value for name, value in flags.items() if value is not None}
    )
    app = create_service_app(settings)

    async def main(shutdown: ShutdownEvent) -> None:
        await serve_simulator(settings, app.state.registry, shutdown)

    return run_service(main, settings, app=app)
