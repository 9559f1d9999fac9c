"""WebSocket price source.

Protocol (JSON text frames):
- client -> server: `{"op": "subscribe", "symbols": ["AAPL", "MSFT"] | "*", "from_seq": 0}`
- server -> client: `{"type": "subscribed", "symbols": [...], "mode": "gbm" | "replay"}`, then ticks
  `{"type": "tick", "symbol": "AAPL", "price": 101.25, "size": 3.0, "ts": "2024-01-02T15:04:05.123456Z", "seq": 42}`
  and `{"type": "end"}` when a replay is over.
Random walks are a live broadcast (every subscriber sees the same prices; `seq` counts per symbol).
A replay is per connection and starts after `from_seq`, so a client that reconnects resumes where it
stopped. Keep-alive is WebSocket ping/pong (the websockets library answers and sends pings).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

logger = logging.getLogger(__name__)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class GbmConfig:
    symbols: Sequence[str]
    interval_s: float = 0.1  # between rounds; each round emits one tick per symbol
    drift: float = 0.05  # annualised
    volatility: float = 0.4  # annualised
    start_price: float = 100.0
    seed: int = 0
    # Time scale: one round advances the walk by this many seconds of market time.
    step_s: float = 60.0


@dataclass
class ReplayConfig:
    path: Path
    symbol: str
    speed: float | None  # None = as fast as possible; else a multiple of real time
    # Stamp each tick with the time it is sent rather than the file's: the file's prices as a live market
    # (what live latency measurements and demos need); the file's timestamps still set the pace.
    live_timestamps: bool = False


@dataclass
class Metrics:
    registry: CollectorRegistry
    clients: Gauge = field(init=False)
    ticks: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.clients = Gauge(
            "tradebot_simulator_clients", "Connected WebSocket clients.", registry=self.registry
        )
        self.ticks = Counter(
            "tradebot_simulator_ticks_total", "Ticks sent, over all clients.", registry=self.registry
        )


class PriceSimulator:
    def __init__(self, source: GbmConfig | ReplayConfig, metrics: Metrics | None = None) -> None:
        self.source = source
        self.metrics = metrics or Metrics(CollectorRegistry())
        self._subscribers: dict[ServerConnection, set[str] | None] = {}
        self._replay: pd.DataFrame | None = None
        if isinstance(source, ReplayConfig):
            from tradebot.backtest.data import load_ohlcv

            self._replay = load_ohlcv(source.path)

    @property
    def mode(self) -> str:
        return "replay" if isinstance(self.source, ReplayConfig) else "gbm"

    def symbols(self) -> list[str]:
        if isinstance(self.source, ReplayConfig):
            return [self.source.symbol]
        return list(self.source.symbols)

    async def handler(self, connection: ServerConnection) -> None:
        self.metrics.clients.inc()
        try:
            async for raw in connection:
                try:
                    request = json.loads(raw)
                    if not isinstance(request, dict) or request.get("op") != "subscribe":
                        raise ValueError('expected {"op": "subscribe", "symbols": [...]}')
                    wanted = request.get("symbols", "*")
                    from_seq = int(request.get("from_seq", 0) or 0)
                except (ValueError, TypeError) as exc:
                    await connection.send(json.dumps({"type": "error", "message": str(exc)}))
                    continue
                chosen = None if wanted == "*" else {str(s) for s in wanted}
                names = self.symbols() if chosen is None else sorted(chosen & set(self.symbols()))
                await connection.send(json.dumps({"type": "subscribed", "symbols": names, "mode": self.mode}))
                if isinstance(self.source, ReplayConfig):
                    # A replay belongs to its connection; the reader loop keeps answering pings meanwhile.
                    await self._replay_to(connection, self.source, from_seq, chosen)
                else:
                    self._subscribers[connection] = chosen
        except ConnectionClosed:
            pass
        finally:
            self._subscribers.pop(connection, None)
            self.metrics.clients.dec()

    async def _replay_to(
        self, connection: ServerConnection, config: ReplayConfig, from_seq: int, chosen: set[str] | None
    ) -> None:
        assert self._replay is not None
        if chosen is not None and config.symbol not in chosen:
            await connection.send(json.dumps({"type": "end"}))
            return
        frame = self._replay
        closes = frame["close"].to_numpy()
        volumes = frame["volume"].to_numpy()
        index = pd.DatetimeIndex(frame.index)
        stamps = [iso(ts) for ts in index[from_seq:].to_pydatetime()]
        seconds = index.as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64) / 1e9
        started = time.monotonic()
        for offset, ts_text in enumerate(stamps):
            seq = from_seq + offset
            if config.speed is not None:
                wait = (seconds[seq] - seconds[from_seq]) / config.speed - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
            elif offset % 256 == 0:
                await asyncio.sleep(0)  # at full speed, still let other connections and pings run
            message = {
                "type": "tick",
                "symbol": config.symbol,
                "price": float(closes[seq]),
                "size": float(volumes[seq]),
                "ts": iso(datetime.now(UTC)) if config.live_timestamps else ts_text,
                "seq": seq + 1,
            }
            await connection.send(json.dumps(message))
            self.metrics.ticks.inc()
        await connection.send(json.dumps({"type": "end"}))

    async def broadcast_walks(self, stop: asyncio.Event) -> None:
        """Random walks for every symbol, one round per interval, sent to each subscriber."""
        assert isinstance(self.source, GbmConfig)
        config = self.source
        rng = np.random.default_rng(config.seed)
        symbols = list(config.symbols)
        prices = np.full(len(symbols), config.start_price)
        seqs = [0] * len(symbols)
        dt = config.step_s / (365.0 * 86_400.0)
        mu = (config.drift - 0.5 * config.volatility**2) * dt
        sigma = config.volatility * math.sqrt(dt)
        while not stop.is_set():
            prices = prices * np.exp(mu + sigma * rng.standard_normal(len(symbols)))
            sizes = rng.integers(1, 500, len(symbols))
            now = iso(datetime.now(UTC))
            for index, symbol in enumerate(symbols):
                seqs[index] += 1
                message = json.dumps(
                    {
                        "type": "tick",
                        "symbol": symbol,
                        "price": round(float(prices[index]), 4),
                        "size": float(sizes[index]),
                        "ts": now,
                        "seq": seqs[index],
                    }
                )
                for connection, chosen in list(self._subscribers.items()):
                    if chosen is None or symbol in chosen:
                        with contextlib.suppress(ConnectionClosed):
                            await connection.send(message)
                            self.metrics.ticks.inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.interval_s)


async def start_server(simulator: PriceSimulator, host: str, port: int) -> Server:
    return await serve(simulator.handler, host, port, ping_interval=20, ping_timeout=20, max_size=2**20)
