"""WebSocket price source.

Protocol (JSON text frames):
- client -> server: `{"op": "subscribe", "symbols": ["AAPL", "MSFT"] | "*", "from_seq": 0}`
- server -> client: `{"type": "subscribed", "symbols": [...], "mode": "gbm" | "replay"}`, then ticks
  `{"type": "tick", "symbol": "AAPL", "price": 101.25, "size": 3.0, "ts": "2024-01-02T15:04:05.123456Z", "seq": 42}`
  and `{"type": "end"}` when a replay is over.
Random walks are a live broadcast (every subscriber sees the same prices; `seq` counts per symbol), on a fixed
schedule: a round (one tick per symbol) every `interval_s`, several rounds in one wake-up when the interval is
shorter than the event loop's. A replay is per connection and starts after `from_seq`, so a client that
reconnects resumes where it stopped. Keep-alive is WebSocket ping/pong (the websockets library answers and
sends pings).

Speed: each tick is encoded once (orjson) into a complete WebSocket frame, and all the frames due for a
client go out in one socket write, so the cost per tick does not grow with the number of clients. Frames
are written under the websockets library (which still handles the handshake, pings and closing): with no
extension negotiated (`compression=None`), a server's text frame is just a header and the payload
(RFC 6455 section 5.2). A broadcast client that lets more than `MAX_QUEUED_BYTES` pile up is closed
(1008), as exchanges close consumers that cannot keep up, rather than buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from tradebot.kit.metrics import PerRegistry

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
class Metrics(PerRegistry):
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


# A broadcast client with more than this much unsent data is closed: it cannot keep up with the market.
MAX_QUEUED_BYTES = 16 * 2**20
# Replay frames go out in chunks of this many ticks (one write, then wait for the socket to drain).
REPLAY_CHUNK = 512
# At most this many ticks of random walks are made in one wake-up (rounds further behind are skipped), so
# the event loop still answers pings and new connections when the schedule asks more than it can do.
MAX_TICKS_PER_WAKE_UP = 5_000


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame carrying ``payload`` (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 2**16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def tick_frame(symbol: str, price: float, size: float, ts: str, seq: int) -> bytes:
    return text_frame(
        orjson.dumps({"type": "tick", "symbol": symbol, "price": price, "size": size, "ts": ts, "seq": seq})
    )


def _writable(connection: ServerConnection) -> bool:
    return connection.protocol.state is State.OPEN and connection.fragmented_send_waiter is None


def _iso_strings(stamps_ns: np.ndarray) -> np.ndarray:
    """``2024-01-02T15:04:05Z`` strings (with microseconds where the data has them), vectorised."""
    values: npt.NDArray[np.datetime64] = stamps_ns.view("datetime64[ns]")
    unit: Literal["s", "us"] = "s" if not np.any(stamps_ns % 1_000_000_000) else "us"
    strings: np.ndarray = np.char.add(np.datetime_as_string(values, unit=unit), "Z")
    return strings


class PriceSimulator:
    def __init__(self, source: GbmConfig | ReplayConfig, metrics: Metrics | None = None) -> None:
        self.source = source
        self.metrics = metrics or Metrics(CollectorRegistry())
        self._subscribers: dict[ServerConnection, set[str] | None] = {}
        self._replay: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # ts (ns), close, volume
        if isinstance(source, ReplayConfig):
            from tradebot.backtest.data import Ticks, load_market_data

            data = load_market_data(source.path)
            bars = data.as_bars() if isinstance(data, Ticks) else data
            self._replay = (bars.ts, bars.close, bars.volume)

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
        stamps, closes, volumes = self._replay
        seconds = stamps / 1e9
        started = time.monotonic()
        first = seq = max(0, from_seq)
        while seq < len(stamps):
            stop = min(seq + REPLAY_CHUNK, len(stamps))
            if config.speed is not None:
                # Everything due by now (at least the next tick, after waiting for it).
                elapsed = (time.monotonic() - started) * config.speed
                due = int(np.searchsorted(seconds, seconds[first] + elapsed, side="right"))
                if due <= seq:
                    wait = (seconds[seq] - seconds[first]) / config.speed - (time.monotonic() - started)
                    await asyncio.sleep(max(wait, 0.0))
                    due = seq + 1
                stop = min(stop, due)
            if config.live_timestamps:
                texts = [iso(datetime.now(UTC))] * (stop - seq)
            else:
                texts = _iso_strings(stamps[seq:stop]).tolist()
            frames = b"".join(
                tick_frame(config.symbol, price, size, ts, number)
                for price, size, ts, number in zip(
                    closes[seq:stop].tolist(),
                    volumes[seq:stop].tolist(),
                    texts,
                    range(seq + 1, stop + 1),
                    strict=True,
                )
            )
            if not _writable(connection):
                return
            connection.transport.write(frames)
            self.metrics.ticks.inc(stop - seq)
            seq = stop
            # Back-pressure from the socket; also lets other connections and pings run.
            await connection.drain()
            await asyncio.sleep(0)
        await connection.send(json.dumps({"type": "end"}))

    def _send(self, frames: list[bytes], symbols: list[str]) -> None:
        """One write per subscriber: every frame (or those of the symbols it chose), encoded once."""
        everything = b"".join(frames)
        for connection, chosen in list(self._subscribers.items()):
            if not _writable(connection):
                continue
            if chosen is None:
                data, count = everything, len(frames)
            else:
                picked = [frame for frame, symbol in zip(frames, symbols, strict=True) if symbol in chosen]
                data, count = b"".join(picked), len(picked)
            if not count:
                continue
            queued = connection.transport.get_write_buffer_size()
            if queued > MAX_QUEUED_BYTES:
                logger.warning(
                    "closing a client that cannot keep up",
                    extra={"peer": str(connection.remote_address), "queued_bytes": queued},
                )
                self._subscribers.pop(connection, None)
                asyncio.get_running_loop().create_task(connection.close(1008, "too slow: ticks piled up"))
                continue
            connection.transport.write(data)
            self.metrics.ticks.inc(count)

    async def broadcast_walks(self, stop: asyncio.Event) -> None:
        """Random walks for every symbol, one round per interval, sent to each subscriber."""
        assert isinstance(self.source, GbmConfig)
        config = self.source
        rng = np.random.default_rng(config.seed)
        symbols = list(config.symbols)
        prices = np.full(len(symbols), config.start_price)
        seqs = np.zeros(len(symbols), dtype=np.int64)
        dt = config.step_s / (365.0 * 86_400.0)
        mu = (config.drift - 0.5 * config.volatility**2) * dt
        sigma = config.volatility * math.sqrt(dt)
        started = time.monotonic()
        rounds = 0  # rounds made (or skipped) since `started`
        most = max(1, MAX_TICKS_PER_WAKE_UP // max(1, len(symbols)))
        while not stop.is_set():
            due = int((time.monotonic() - started) / config.interval_s) + 1 - rounds
            if due > most:
                rounds += due - most  # behind schedule: skip rounds rather than stall the loop
                due = most
            now = iso(datetime.now(UTC))
            frames: list[bytes] = []
            names: list[str] = []
            for _ in range(max(due, 0)):
                prices = prices * np.exp(mu + sigma * rng.standard_normal(len(symbols)))
                sizes = rng.integers(1, 500, len(symbols))
                seqs += 1
                for symbol, price, size, seq in zip(
                    symbols, prices.tolist(), sizes.tolist(), seqs.tolist(), strict=True
                ):
                    frames.append(tick_frame(symbol, round(price, 4), float(size), now, seq))
                names.extend(symbols)
            rounds += max(due, 0)
            if frames:
                self._send(frames, names)
            wait = started + rounds * config.interval_s - time.monotonic()
            if wait <= 0:
                await asyncio.sleep(0)  # behind schedule: still let connections and pings run
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)


async def start_server(simulator: PriceSimulator, host: str, port: int) -> Server:
    # No compression: ticks are small, and frames are written pre-encoded (see the module docstring).
    return await serve(
        simulator.handler, host, port, ping_interval=20, ping_timeout=20, max_size=2**20, compression=None
    )
