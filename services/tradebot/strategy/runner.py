"""Consume ticks, run the strategy, produce orders, exactly once.

Each poll batch is one Kafka transaction holding the orders and signals it caused, a snapshot of the
strategy's state (to the compacted `strategy-state` topic) and the consumer's offsets. A crash at any
moment therefore leaves either all of a batch or none of it: on restart the last committed snapshot
and the committed offsets describe the same point, and the replayed ticks re-create the same orders
with the same ids. The consumer also reads `fills`, to undo the fills it assumed for orders the paper
broker refused. Halting is enforced by the executor alone (it refuses a halted strategy's entries,
visibly, on `fills`), so there is one place that decides and one record of every refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from tradebot.adapters.bus import Bus, BusError, Consumer, FencedError, TransactionalProducer
from tradebot.adapters.store import Store
from tradebot.adapters.topics import FILLS, ORDERS, SIGNALS, STRATEGY_STATE, TICKS, FillRecord
from tradebot.core.costs import Costs
from tradebot.core.live import LiveStrategy
from tradebot.core.models import FillStatus, Tick
from tradebot.core.params import StrategyParams
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.kit.metrics import ConsumerLagGauge

logger = logging.getLogger(__name__)


@dataclass
class StrategyMetrics:
    """The strategy's metrics (catalogued in services/README.md)."""

    registry: CollectorRegistry
    ticks: Counter = field(init=False)
    orders: Counter = field(init=False)
    signals: Counter = field(init=False)
    transactions: Counter = field(init=False)
    position: Gauge = field(init=False)
    equity: Gauge = field(init=False)
    batch_seconds: Histogram = field(init=False)
    lag: ConsumerLagGauge = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.ticks = Counter("tradebot_strategy_ticks", "Ticks processed.", ["strategy"], registry=r)
        self.orders = Counter(
            "tradebot_strategy_orders", "Orders emitted.", ["strategy", "side", "reason"], registry=r
        )
        self.signals = Counter(
            "tradebot_strategy_signals", "Moving-average crosses seen.", ["strategy", "direction"], registry=r
        )
        self.transactions = Counter(
            "tradebot_strategy_transactions",
            "Transactions, committed or aborted.",
            ["strategy", "result"],
            registry=r,
        )
        self.position = Gauge(
            "tradebot_strategy_position",
            "The position the strategy holds (quantity, negative when short).",
            ["strategy", "symbol"],
            registry=r,
        )
        self.equity = Gauge(
            "tradebot_strategy_equity", "The strategy's own mark-to-market equity.", ["strategy"], registry=r
        )
        self.batch_seconds = Histogram(
            "tradebot_strategy_batch_seconds",
            "Time to process one poll batch of ticks and commit its transaction.",
            ["strategy"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.lag = ConsumerLagGauge.of(r)

    def start(self, strategy_id: str, symbols: list[str], position_of: Callable[[str], float]) -> None:
        """Series known up front start at 0, so rates and alerts see a 0 rather than nothing. Positions
        are read when scraped: the hot loop does not set one gauge per symbol per batch."""
        self.ticks.labels(strategy=strategy_id)
        for result in ("committed", "aborted"):
            self.transactions.labels(strategy=strategy_id, result=result)
        for symbol in symbols:
            self.position.labels(strategy=strategy_id, symbol=symbol).set_function(
                functools.partial(position_of, symbol)
            )


class StrategyRunner:
    def __init__(
        self,
        *,
        strategy_id: str,
        symbols: list[str],
        params: StrategyParams,
        costs: Costs,
        initial_cash: float,
        bus: Bus,
        store: Store | None,
        metrics: StrategyMetrics,
        batch_max: int = 5000,
        poll_timeout_s: float = 0.05,
    ) -> None:
        self.strategy_id = strategy_id
        self.symbols = set(symbols)
        self.params = params
        self.costs = costs
        self.initial_cash = initial_cash
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.batch_max = batch_max
        self.poll_timeout_s = poll_timeout_s
        self.strategy = LiveStrategy(strategy_id, params, costs, initial_cash)
        self._committed_snapshot: dict[str, Any] = self.strategy.snapshot()
        self._untracked_warned_at = -math.inf
        self.ready = False

    # -- start-up --------------------------------------------------------------------------------
    def restore(self) -> bool:
        """Loads the last committed snapshot of this strategy, if any; True when one was found."""
        latest: bytes | None = None
        for record in self.bus.read_all(STRATEGY_STATE, read_committed=True, timeout=30.0):
            if record.key == self.strategy_id.encode():
                latest = record.value
        if latest is None:
            return False
        snapshot = json.loads(latest)
        restored = LiveStrategy.restore(snapshot)
        if restored.params != self.params or restored.costs != self.costs:
            # New parameters mean a new strategy: its history does not apply (the operator rolls pods
            # with a new config hash when the spec changes).
            logger.warning(
                "stored state has other parameters; starting afresh", extra={"strategy": self.strategy_id}
            )
            return False
        self.strategy = restored
        self._committed_snapshot = snapshot
        return True

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, shutdown: ShutdownEvent) -> None:
        restored = await asyncio.to_thread(self.restore)
        producer = await asyncio.to_thread(self._producer)
        consumer = self._consumer()
        if self.store is not None:
            await self.store.register_strategy(
                self.strategy_id,
                {
                    "symbols": sorted(self.symbols),
                    "params": self.params.model_dump(mode="json"),
                    "costs": self.costs.model_dump(mode="json"),
                    "initial_cash": self.initial_cash,
                },
            )
        self.metrics.start(self.strategy_id, sorted(self.symbols), self.position_of)
        logger.info("strategy running", extra={"strategy": self.strategy_id, "restored": restored})
        self.ready = True
        try:
            while not shutdown.is_set():
                records = await asyncio.to_thread(consumer.poll, self.poll_timeout_s, self.batch_max)
                self.metrics.lag.update(self._group, consumer)
                if not records:
                    continue
                try:
                    await asyncio.to_thread(self.process, records, producer, consumer)
                except FencedError:
                    logger.error(
                        "another instance took over this strategy; stopping",
                        extra={"strategy": self.strategy_id},
                    )
                    shutdown.set("fenced")
                except BusError as exc:
                    logger.warning(
                        "transaction aborted; resuming from the last commit", extra={"error": str(exc)}
                    )
                    self.metrics.transactions.labels(strategy=self.strategy_id, result="aborted").inc()
                    await asyncio.to_thread(self._abort_and_rewind, producer, consumer)
                    # A new producer with the same transactional id fences the old one and aborts
                    # whatever it left open; a new consumer resumes from the committed offsets.
                    producer = await asyncio.to_thread(self._producer)
                    consumer = self._consumer()
        finally:
            self.ready = False
            await asyncio.to_thread(consumer.close)
            await asyncio.to_thread(producer.close)

    def position_of(self, symbol: str) -> float:
        """The quantity held in `symbol` (negative when short); safe to call from another thread."""
        return self.strategy.book.position(symbol)

    @property
    def _group(self) -> str:
        return f"strategy-{self.strategy_id}"

    def _producer(self) -> TransactionalProducer:
        return self.bus.transactional_producer(self._group)

    def _consumer(self) -> Consumer:
        return self.bus.consumer(self._group, [TICKS, FILLS], read_committed=True)

    def _abort_and_rewind(self, producer: TransactionalProducer, consumer: Consumer) -> None:
        with contextlib.suppress(BusError):
            producer.abort()
        producer.close()
        consumer.close()
        self.strategy = LiveStrategy.restore(self._committed_snapshot)

    def process(self, records: list[Any], producer: TransactionalProducer, consumer: Consumer) -> None:
        """One transaction: everything `records` cause, the state snapshot, and the offsets."""
        started = time.perf_counter()
        strategy = self.strategy
        sid = self.strategy_id
        producer.begin()
        ticks = 0
        untracked = strategy.counters.untracked_orders
        for record in records:
            if record.topic == TICKS:
                try:
                    tick = Tick.model_validate_json(record.value)
                except ValidationError:
                    continue  # the feed validated it; a foreign producer's garbage is not ours to trade on
                if tick.symbol not in self.symbols:
                    continue
                ticks += 1
                cause = f"tick:{tick.symbol}:{tick.seq if tick.seq is not None else tick.ts.isoformat()}"
                step = strategy.on_price(tick.symbol, tick.price, tick.ts, cause)
                for order in step.orders:
                    producer.produce(ORDERS, order.model_dump_json().encode(), key=order.symbol.encode())
                    # Assume the paper broker's fill; a refusal comes back on `fills`.
                    strategy.assume_filled(order)
                    self.metrics.orders.labels(
                        strategy=sid, side=order.side.value, reason=order.reason.value
                    ).inc()
                if step.signal is not None:
                    producer.produce(
                        SIGNALS, step.signal.model_dump_json().encode(), key=tick.symbol.encode()
                    )
                    self.metrics.signals.labels(strategy=sid, direction=step.signal.direction).inc()
            elif record.topic == FILLS:
                try:
                    fill_record = FillRecord.model_validate_json(record.value)
                except ValidationError:
                    continue
                if fill_record.order.strategy_id == sid:
                    strategy.on_broker_answer(
                        fill_record.order, filled=fill_record.fill.status is FillStatus.FILLED
                    )
        if strategy.counters.untracked_orders > untracked and started - self._untracked_warned_at > 60.0:
            self._untracked_warned_at = started
            logger.warning(
                "too many orders in flight: the oldest are no longer tracked (is the executor running?)",
                extra={"strategy": sid, "untracked_orders": strategy.counters.untracked_orders},
            )
        snapshot = strategy.snapshot()
        producer.produce(STRATEGY_STATE, json.dumps(snapshot).encode(), key=sid.encode())
        producer.commit(consumer)
        self._committed_snapshot = snapshot
        self.metrics.ticks.labels(strategy=sid).inc(ticks)
        self.metrics.transactions.labels(strategy=sid, result="committed").inc()
        self.metrics.equity.labels(strategy=sid).set(strategy.equity())
        self.metrics.batch_seconds.labels(strategy=sid).observe(time.perf_counter() - started)
