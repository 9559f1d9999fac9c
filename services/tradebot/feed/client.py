"""The feed loop: connect, subscribe, validate every message, publish ticks, cache last prices.

Reconnects with exponential backoff and full jitter, resubscribes from the last sequence number
(a replaying source resumes there; a live one cannot, and the gap is counted and logged), and drops
duplicates after a reconnect. A bad message never stops the feed: it goes to `ticks.dlq` with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tradebot.adapters.bus import BusError, Producer
from tradebot.adapters.store import Store, StoreError
from tradebot.adapters.topics import TICKS, TICKS_DLQ, DeadLetter
from tradebot.feed.codecs import REJECT_CODES, Codec, Rejected
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.kit.metrics import PerRegistry

logger = logging.getLogger(__name__)


@dataclass
class FeedMetrics(PerRegistry):
    """The feed's metrics (catalogued in services/README.md)."""

    registry: CollectorRegistry
    received: Counter = field(init=False)
    ticks: Counter = field(init=False)
    rejected: Counter = field(init=False)
    duplicates: Counter = field(init=False)
    gaps: Counter = field(init=False)
    reconnects: Counter = field(init=False)
    connected: Gauge = field(init=False)
    queued: Gauge = field(init=False)
    backpressure: Counter = field(init=False)
    undelivered: Counter = field(init=False)
    since_last_tick: Gauge = field(init=False)
    last_tick_monotonic: float = field(init=False, default_factory=time.monotonic)

    def __post_init__(self) -> None:
        r = self.registry
        self.received = Counter(
            "tradebot_feed_messages_received", "WebSocket messages received from the source.", registry=r
        )
        self.ticks = Counter(
            "tradebot_feed_ticks_published", "Valid ticks published to `ticks`.", ["symbol"], registry=r
        )
        self.rejected = Counter(
            "tradebot_feed_messages_rejected",
            "Messages sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=r,
        )
        for code in REJECT_CODES:
            self.rejected.labels(reason=code)
        self.duplicates = Counter(
            "tradebot_feed_duplicate_ticks", "Ticks dropped as already seen.", registry=r
        )
        self.gaps = Counter(
            "tradebot_feed_gap_ticks", "Ticks missed between reconnects (by sequence).", registry=r
        )
        self.reconnects = Counter("tradebot_feed_reconnects", "Reconnections to the source.", registry=r)
        self.queued = Gauge(
            "tradebot_feed_producer_queued", "Records waiting for Kafka's acknowledgement.", registry=r
        )
        self.backpressure = Counter(
            "tradebot_feed_backpressure_seconds",
            "Time the source was paused because Kafka did not take ticks.",
            registry=r,
        )
        self.undelivered = Counter(
            "tradebot_feed_ticks_undelivered", "Records still undelivered at shutdown (dropped).", registry=r
        )
        self.connected = Gauge("tradebot_feed_connected", "1 while connected to the source.", registry=r)
        self.since_last_tick = Gauge(
            "tradebot_feed_seconds_since_last_tick",
            "Seconds since the last valid tick arrived (since start-up before the first).",
            registry=r,
        )
        # Computed at scrape time: a stalled feed has nobody to update a gauge.
        self.since_last_tick.set_function(lambda: time.monotonic() - self.last_tick_monotonic)

    def tick_arrived(self) -> None:
        self.last_tick_monotonic = time.monotonic()


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(maximum, initial * 2**attempt)]."""
    return rng.uniform(0.0, min(maximum, initial * (2.0**attempt)))


class Feed:
    def __init__(
        self,
        *,
        codec: Codec,
        url: str,
        symbols: list[str],
        producer: Producer,
        store: Store | None,
        metrics: FeedMetrics,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
        price_flush_s: float = 0.25,
        history_per_flush: int = 5000,
        max_queued: int = 50_000,
        flush_timeout_s: float = 20.0,
        seed: int | None = None,
    ) -> None:
        self.codec = codec
        self.url = url
        self.symbols = symbols
        self.producer = producer
        self.store = store
        self.metrics = metrics
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.price_flush_s = price_flush_s
        # Backpressure: no message is read from the source while this many records wait for Kafka.
        self.max_queued = max_queued
        # The shutdown flush's share of the grace period.
        self.flush_timeout_s = flush_timeout_s
        self.connected = False
        self.last_seq: dict[str, int] = {}
        # Symbols with no tick yet on the current connection: their first tick may show that the source
        # restarted its sequence (a restarted live source counts from 1 again).
        self._first_on_connection: set[str] = set()
        self._latest: dict[str, tuple[float, datetime]] = {}
        # Price history for charts: every tick, up to `history_per_flush` per symbol between two
        # writes (a bound on Redis traffic at high rates; replays keep nearly every point).
        self._history: dict[str, list[tuple[float, datetime]]] = {}
        self.history_per_flush = history_per_flush
        self._rng = random.Random(seed)
        self._attempt = 0
        self._published: dict[str, Counter] = {}

    def _published_of(self, symbol: str) -> Counter:
        """The symbol's series of `ticks`, found once (`labels` per tick was a twentieth of the feed's time)."""
        counter = self._published.get(symbol)
        if counter is None:
            counter = self._published[symbol] = self.metrics.ticks.labels(symbol=symbol)
        return counter

    # -- one message -------------------------------------------------------------------------
    def handle(self, raw: str | bytes) -> int:
        """Validates one message and publishes what it holds; returns the ticks published."""
        self.metrics.received.inc()
        decoded = self.codec.decode(raw)
        if isinstance(decoded, Rejected):
            self._dead_letter(raw, decoded)
            return 0
        published = 0
        for tick in decoded:
            if self.symbols and tick.symbol not in self.symbols:
                continue
            if tick.seq is not None:
                last = self.last_seq.get(tick.symbol)
                if last is not None and tick.seq <= last and tick.symbol in self._first_on_connection:
                    # A resumed source answers from last + 1 and a live one runs ahead; a sequence that went
                    # back on a new connection means the source restarted: follow it, or drop every tick.
                    logger.warning(
                        "the source restarted its sequence",
                        extra={"symbol": tick.symbol, "seq": tick.seq, "last_seq": last},
                    )
                    last = None
                self._first_on_connection.discard(tick.symbol)
                if last is not None and tick.seq <= last:
                    self.metrics.duplicates.inc()
                    continue
                if last is not None and tick.seq > last + 1:
                    missing = tick.seq - last - 1
                    self.metrics.gaps.inc(missing)
                    logger.warning(
                        "gap in the feed",
                        extra={"symbol": tick.symbol, "missing": missing, "after_seq": last},
                    )
                self.last_seq[tick.symbol] = tick.seq
            self.producer.produce(TICKS, tick.model_dump_json().encode(), key=tick.symbol.encode())
            self._published_of(tick.symbol).inc()
            self.metrics.tick_arrived()
            self._latest[tick.symbol] = (tick.price, tick.ts)
            recent = self._history.setdefault(tick.symbol, [])
            if len(recent) < self.history_per_flush:
                recent.append((tick.price, tick.ts))
            published += 1
        return published

    def _dead_letter(self, raw: str | bytes, rejected: Rejected) -> None:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        letter = DeadLetter(
            source=self.codec.name,
            reason=rejected.reason,
            raw=text[:10_000],
            received_at=datetime.now(UTC).isoformat(),
        )
        self.producer.produce(TICKS_DLQ, letter.to_json())
        self.metrics.rejected.labels(reason=rejected.code).inc()
        logger.info("message to the dead-letter topic", extra={"reason": rejected.reason})

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, shutdown: ShutdownEvent) -> None:
        self._attempt = 0
        try:
            # One task group: a bug in the price cache's flusher stops the feed rather than dying unseen.
            async with asyncio.TaskGroup() as tasks:
                flusher = tasks.create_task(self._flush_prices(shutdown), name="feed-price-cache")
                await self._sessions(shutdown)
                flusher.cancel()
        finally:
            self._set_connected(False)
            try:
                await self._write_prices()
            except StoreError as exc:  # the ticks matter more: flush them to Kafka all the same
                logger.warning("price cache write failed", extra={"error": str(exc)})
            try:
                await asyncio.to_thread(self.producer.flush, self.flush_timeout_s)
            except BusError as exc:  # Kafka away at shutdown: what is left is counted, not waited for
                left = self.producer.poll(0)
                self.metrics.undelivered.inc(left)
                logger.error(
                    "ticks not delivered at shutdown",
                    extra={"error": str(exc), "undelivered": left, "timeout_s": self.flush_timeout_s},
                )

    async def _sessions(self, shutdown: ShutdownEvent) -> None:
        while not shutdown.is_set():
            try:
                await self._session(shutdown)
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, InvalidURI) as exc:
                self._set_connected(False)
                if shutdown.is_set():
                    break
                delay = backoff_delay(self._attempt, self.backoff_initial_s, self.backoff_max_s, self._rng)
                self._attempt += 1
                self.metrics.reconnects.inc()
                logger.warning(
                    "source connection lost; reconnecting",
                    extra={
                        "url": self.url,
                        "error": f"{type(exc).__name__}: {exc}",
                        "delay_s": round(delay, 3),
                    },
                )
                await shutdown.sleep(delay)

    async def _session(self, shutdown: ShutdownEvent) -> None:
        async with connect(
            self.url, ping_interval=20, ping_timeout=20, open_timeout=10, max_size=2**22
        ) as ws:
            from_seq = max(self.last_seq.values(), default=0)
            self._first_on_connection = set(self.last_seq)
            await ws.send(self.codec.subscribe_message(self.symbols, from_seq))
            self._set_connected(True)
            self._attempt = 0  # a successful connection resets the backoff
            logger.info("connected to the source", extra={"url": self.url, "from_seq": from_seq})
            closer = asyncio.create_task(self._close_on_shutdown(ws, shutdown))
            try:
                async for raw in ws:
                    if not await self._room_in_queue(shutdown):
                        break  # shutting down with Kafka away: this message stays unread
                    self.handle(raw)
            finally:
                closer.cancel()
            if not shutdown.is_set():
                # The source closed the connection cleanly (e.g. it is restarting): still a disconnect.
                raise ConnectionError("the source closed the connection")

    async def _room_in_queue(self, shutdown: ShutdownEvent) -> bool:
        """Waits (off the event loop: probes and SIGTERM keep answering) while the producer holds
        `max_queued` records Kafka has not taken; meanwhile the source's messages wait in the socket.
        False when shutdown came first."""
        queued = self.producer.poll(0)
        self.metrics.queued.set(queued)
        if queued < self.max_queued:
            return True
        logger.warning("Kafka is not taking ticks; pausing the source", extra={"queued": queued})
        while queued >= self.max_queued:
            if shutdown.is_set():
                return False
            started = time.monotonic()
            queued = await asyncio.to_thread(self.producer.poll, 0.2)
            self.metrics.queued.set(queued)
            self.metrics.backpressure.inc(time.monotonic() - started)
        return True

    @staticmethod
    async def _close_on_shutdown(ws: ClientConnection, shutdown: ShutdownEvent) -> None:
        await shutdown.wait()
        await ws.close()

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        self.metrics.connected.set(1 if value else 0)

    async def _flush_prices(self, shutdown: ShutdownEvent) -> None:
        while not await shutdown.sleep(self.price_flush_s):
            try:
                await self._write_prices()
            except StoreError as exc:  # the cache is best effort; ticks still flow to Kafka
                logger.warning("price cache write failed", extra={"error": str(exc)})

    async def _write_prices(self) -> None:
        if self.store is None or not self._latest:
            return
        latest, self._latest = self._latest, {}
        history, self._history = self._history, {}
        for symbol, (price, ts) in latest.items():
            points = history.setdefault(symbol, [])
            if not points or points[-1] != (price, ts):
                points.append((price, ts))  # the history always ends at the last price
        await self.store.record_prices(latest, history)  # one round trip for every symbol
