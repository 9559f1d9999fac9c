"""Consume ticks, run the strategy, produce orders, exactly once.

Each poll batch is one Kafka transaction (`adapters/transactional.py`) holding the orders and signals it
caused, a snapshot of the strategy's state (to its compacted `strategy-state.<id>` topic) and the consumer's
offsets. A crash or an abort at any moment therefore leaves either all of a batch or none of it: once
this instance has fenced its predecessor, the last committed snapshot and the committed offsets describe
the same point, and the replayed ticks re-create the same orders with the same ids. The consumer also reads `fills`, to undo the fills it assumed for orders the paper
broker refused. Halting is enforced by the executor alone (it refuses a halted strategy's entries,
visibly, on `fills`), so there is one place that decides and one record of every refusal.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from tradebot.adapters.bus import Bus, BusError, Producer, Record
from tradebot.adapters.store import Store
from tradebot.adapters.topics import (
    BARS,
    COMMANDS,
    FILLS,
    ORDERS,
    SIGNALS,
    STRATEGY_STATE,
    TICKS,
    ExitCommand,
    FillRecord,
    closed_bar,
    strategy_state_topic,
    strategy_topics,
)
from tradebot.adapters.transactional import TransactionalLoop
from tradebot.core.bars import TICK, Bar, timeframe_ns
from tradebot.core.costs import Costs
from tradebot.core.live import LiveStrategy
from tradebot.core.models import ClosedBar, FillStatus, OrderRequest, Signal, Tick
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import epoch_ns
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.kit.metrics import ConsumerLagGauge, PerRegistry
from tradebot.strategy.state import StateLayout, StoredState

logger = logging.getLogger(__name__)


BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def tick_cause(tick: Tick) -> str:
    """The tick as an order's cause (which seeds the order's id): the same tick gives the same cause, so a
    replay re-creates the same ids. The sequence number alone repeats when the source restarts it (a
    restarted simulator counts from 1 again), and the executor would drop the new orders as duplicates:
    the source's own timestamp with it tells the two apart."""
    if tick.seq is None:
        return f"tick:{tick.symbol}:{tick.ts.isoformat()}"
    return f"tick:{tick.symbol}:{tick.seq}:{tick.ts.isoformat()}"


@dataclass
class StrategyMetrics(PerRegistry):
    """The strategy's metrics (catalogued in services/README.md)."""

    registry: CollectorRegistry
    ticks: Counter = field(init=False)
    orders: Counter = field(init=False)
    signals: Counter = field(init=False)
    transactions: Counter = field(init=False)
    position: Gauge = field(init=False)
    equity: Gauge = field(init=False)
    batch_seconds: Histogram = field(init=False)
    process_seconds: Histogram = field(init=False)
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
            buckets=BATCH_BUCKETS_S,
        )
        # The batch's share before the commit (its ticks, orders and state snapshot): the rest is Kafka's.
        self.process_seconds = Histogram(
            "tradebot_strategy_process_seconds",
            "Time to process one poll batch and produce its records, before the transaction's commit.",
            ["strategy"],
            registry=r,
            buckets=BATCH_BUCKETS_S,
        )
        self.bars = Counter(
            "tradebot_strategy_bars", "Bars closed (and published to bars).", ["strategy"], registry=r
        )
        self.late_ticks = Counter(
            "tradebot_strategy_late_ticks",
            "Ticks that came after their bar had closed: counted and logged, never merged.",
            ["strategy"],
            registry=r,
        )
        self.lag = ConsumerLagGauge.of(r)

    def start(self, strategy_id: str, symbols: list[str], position_of: Callable[[str], float]) -> None:
        """Series known up front start at 0, so rates and alerts see a 0 rather than nothing. Positions
        are read when scraped: the hot loop does not set one gauge per symbol per batch."""
        self.ticks.labels(strategy=strategy_id)
        self.bars.labels(strategy=strategy_id)
        self.late_ticks.labels(strategy=strategy_id)
        for result in ("committed", "aborted"):
            self.transactions.labels(strategy=strategy_id, result=result)
        for symbol in symbols:
            self.position.labels(strategy=strategy_id, symbol=symbol).set_function(
                functools.partial(position_of, symbol)
            )


class StrategyRunner:
    """One strategy as the transactional loop's batch processor: ticks in; orders, signals and a snapshot
    of its state out; its own fills read back to settle the orders it assumed filled."""

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
        bar_lateness_s: float | None = None,
        history_files: dict[str, str] | None = None,
    ) -> None:
        self.strategy_id = strategy_id
        self.symbols = set(symbols)
        self.params = params
        self.costs = costs
        self.initial_cash = initial_cash
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.state_topic = strategy_state_topic(strategy_id)
        self._state_topic_ready = False
        # None: bars close on event time only (replays); a number: also on the clock, that long after
        # their bucket ended (a live source).
        self.bar_lateness_s = bar_lateness_s
        # Warm-up datasets per symbol (CSV or Parquet, any data `tradebot backtest` reads); else `bars`.
        self.history_files = history_files or {}
        self.warm_up_seconds = 0.0
        self.strategy = self._fresh()
        self._lay_out()
        self.loop = TransactionalLoop(
            bus,
            self,
            group=f"strategy-{strategy_id}",
            topics=[TICKS, FILLS, COMMANDS],
            batch_max=batch_max,
            poll_timeout_s=poll_timeout_s,
            lag=metrics.lag,
            idle_due=self.clock_due,
        )
        self._untracked_warned_at = -math.inf
        self._batch_started = 0.0
        self._batch_processed = 0.0
        self._batch_ticks = 0

    @property
    def ready(self) -> bool:
        return self.loop.ready

    async def run(self, shutdown: ShutdownEvent) -> None:
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
        await self.loop.run(shutdown)

    def position_of(self, symbol: str) -> float:
        """The quantity held in `symbol` (negative when short); safe to call from another thread."""
        return self.strategy.book.position(symbol)

    def _fresh(self) -> LiveStrategy:
        return LiveStrategy(self.strategy_id, self.params, self.costs, self.initial_cash)

    # -- the transactional loop's batch processor -------------------------------------------------
    def rebuild(self) -> None:
        """The strategy as its last committed snapshot left it; a fresh one when there is none."""
        if not self._state_topic_ready:  # the strategy's own topic: made by the strategy, once
            self.bus.ensure_topics(strategy_topics(self.strategy_id))
            self._state_topic_ready = True
        stored = self._read_state(self.state_topic)
        if stored.head is None:
            stored = self._legacy_state()
        self.strategy = self._fresh()
        snap = stored.snapshot()
        restored = snap is not None
        if snap is not None:
            try:
                snapshot: LiveStrategy | None = LiveStrategy.restore(snap)
            except ValidationError:  # parameters stored before a bound they now exceed (MAX_WINDOW)
                snapshot = None
            restored = (
                snapshot is not None and snapshot.params == self.params and snapshot.costs == self.costs
            )
            if restored and snapshot is not None:
                self.strategy = snapshot
            else:
                # New parameters mean a new strategy: its history does not apply (the operator rolls
                # pods with a new config hash when the spec changes).
                logger.warning(
                    "stored state has other parameters; starting afresh", extra={"strategy": self.strategy_id}
                )
        self._lay_out()
        logger.info("strategy state rebuilt", extra={"strategy": self.strategy_id, "restored": restored})
        if not restored and self.params.timeframe != TICK:
            self._warm_up()

    def _warm_up(self) -> None:
        """A bar strategy starting afresh: the last `long_window` bars of its timeframe per symbol, from the
        datasets named in its settings or else from the `bars` topic, fill its moving averages so it
        trades on the first new bar. Too short a history is logged and said in readiness (`history_short`)."""
        started = time.perf_counter()
        wanted = self.params.long_window
        history = self._history_from_files() if self.history_files else self._history_from_topic()
        for symbol in sorted(self.symbols):
            bars = history.get(symbol, [])[-wanted:]
            if bars:
                end = bars[-1][0] + timeframe_ns(self.params.timeframe)
                self.strategy.warm_up(symbol, [close for _, close in bars], end)
            else:
                self.strategy.state(symbol)
        self.warm_up_seconds = time.perf_counter() - started
        short = self.history_short()
        extra = {"strategy": self.strategy_id, "seconds": round(self.warm_up_seconds, 3), "bars": wanted}
        if short:
            logger.warning("history too short to trade on the first bar", extra={**extra, "short": short})
        else:
            logger.info("warmed up from history", extra=extra)

    def history_short(self) -> list[str]:
        """Per symbol whose long moving average still lacks bars: how many it has of how many it needs."""
        wanted = self.params.long_window
        return [
            f"{symbol}: {wanted - missing} of {wanted} {self.params.timeframe} bars"
            for symbol in sorted(self.symbols)
            if (missing := self.strategy.bars_short(symbol)) > 0
        ]

    def _history_from_topic(self) -> dict[str, list[tuple[int, float]]]:
        """(open time ns, close) per symbol from `bars`, one per open time, oldest first; kept to the last
        `long_window` as the topic is scanned, so memory does not grow with its length."""
        keep = self.params.long_window
        closes: dict[str, dict[int, float]] = {}
        for batch in self.bus.scan(BARS, read_committed=True, timeout=60.0):
            for record in batch:
                try:
                    bar = ClosedBar.model_validate_json(record.value)
                except ValidationError:
                    continue
                if bar.timeframe != self.params.timeframe or bar.symbol not in self.symbols:
                    continue
                seen = closes.setdefault(bar.symbol, {})
                seen.setdefault(epoch_ns(bar.ts), bar.close)
                if len(seen) > 2 * keep:
                    for ts in sorted(seen)[: len(seen) - keep]:
                        del seen[ts]
        return {symbol: sorted(seen.items()) for symbol, seen in closes.items()}

    def _history_from_files(self) -> dict[str, list[tuple[int, float]]]:
        from tradebot.backtest.data import at_timeframe, load_market_data

        history: dict[str, list[tuple[int, float]]] = {}
        for symbol, path in self.history_files.items():
            bars = at_timeframe(load_market_data(path), self.params.timeframe, path)
            history[symbol] = list(zip(bars.ts.tolist(), bars.close.tolist(), strict=True))
        return history

    def process_batch(self, records: list[Record], producer: Producer) -> None:
        """Everything `records` cause, and the state snapshot after them."""
        self._batch_started = started = time.perf_counter()
        strategy = self.strategy
        sid = self.strategy_id
        ticks = 0
        untracked = strategy.counters.untracked_orders
        changed: set[str] = set()

        def execute(order: OrderRequest) -> None:
            producer.produce(ORDERS, order.model_dump_json().encode(), key=order.symbol.encode())
            # Assume the paper broker's fill; a refusal comes back on `fills`.
            strategy.assume_filled(order)
            self.metrics.orders.labels(strategy=sid, side=order.side.value, reason=order.reason.value).inc()

        if self.bar_lateness_s is not None:
            # A live source gone quiet: its bars close on the clock (a later tick of theirs is late).
            lateness_ns = int(self.bar_lateness_s * 1e9)
            for symbol, bar, closed in strategy.close_due_bars(datetime.now(UTC), lateness_ns, execute):
                changed.add(symbol)
                self._produce_bar(producer, symbol, bar)
                if closed.signal is not None:
                    self._produce_signal(producer, closed.signal)
        for record in records:
            if record.topic == TICKS:
                try:
                    tick = Tick.model_validate_json(record.value)
                except ValidationError:
                    continue  # the feed validated it; a foreign producer's garbage is not ours to trade on
                if tick.symbol not in self.symbols:
                    continue
                ticks += 1
                changed.add(tick.symbol)
                step = strategy.on_tick(
                    tick.symbol, tick.price, tick.size, tick.ts, tick_cause(tick), execute
                )
                if step.late:
                    self._late_tick(tick)
                else:
                    strategy.note_tick(tick.symbol, tick.ts)
                if step.bar is not None:
                    self._produce_bar(producer, tick.symbol, step.bar)
                if step.signal is not None:
                    self._produce_signal(producer, step.signal)
            elif record.topic == FILLS:
                try:
                    fill_record = FillRecord.model_validate_json(record.value)
                except ValidationError:
                    continue
                if fill_record.order.strategy_id == sid:
                    changed.add(fill_record.order.symbol)
                    strategy.on_broker_answer(
                        fill_record.order, filled=fill_record.fill.status is FillStatus.FILLED
                    )
            elif record.topic == COMMANDS:
                changed.update(self._on_command(record, producer))
        if strategy.counters.untracked_orders > untracked and started - self._untracked_warned_at > 60.0:
            self._untracked_warned_at = started
            logger.warning(
                "too many orders in flight: the oldest are no longer tracked (is the executor running?)",
                extra={"strategy": sid, "untracked_orders": strategy.counters.untracked_orders},
            )
        if strategy.counters.untracked_orders > untracked:
            changed = set(strategy.symbols)  # untracking touches the symbol with the most in flight
        self._produce_state(producer, changed)
        self._batch_ticks = ticks
        self._batch_processed = time.perf_counter()

    def _read_state(self, topic: str) -> StoredState:
        """The last head record of this strategy on `topic`, and the last record of each of its groups
        and (version 1) symbols."""
        stored = StoredState()
        for record in self.bus.read_all(topic, read_committed=True, timeout=30.0):
            stored.add(self.strategy_id, record.key, record.value)
        return stored

    def _legacy_state(self) -> StoredState:
        """The snapshot a strategy wrote before state topics were per strategy (on the shared
        `strategy-state`), so an upgrade resumes from it; none when that topic is gone or not readable."""
        try:
            return self._read_state(STRATEGY_STATE)
        except BusError:
            return StoredState()

    def _lay_out(self) -> None:
        """A new generation, laid out over every symbol the strategy may hold; every group of it is
        written at the next commit (see `tradebot.strategy.state`)."""
        self.layout = StateLayout(
            self.strategy_id, self.params, self.symbols | set(self.strategy.symbols), uuid.uuid4().hex
        )
        self._dirty_all = True

    def _on_command(self, record: Record, producer: Producer) -> set[str]:
        """A force-exit or close-all for this strategy: the exit orders, sent and assumed filled like the
        strategy's own (so it does not exit the same position again). The symbols it touched."""
        try:
            command = ExitCommand.model_validate_json(record.value)
        except ValidationError:
            logger.error("unreadable record on strategy-commands", extra={"offset": record.offset})
            return set()
        if command.strategy_id != self.strategy_id:
            return set()
        if command.command_id in self.strategy.handled_commands:
            # A retry (or the batch read again after a restart): executed once already. Its exit, made
            # again now, would close a position entered since, with an order the executor may drop.
            logger.info(
                "force-exit command already handled",
                extra={"strategy": self.strategy_id, "command_id": command.command_id},
            )
            return set()
        symbols = sorted(self.symbols) if command.symbol is None else [command.symbol]
        touched: set[str] = set()
        for symbol in symbols:
            # Stamped with its price's tick time (see `force_exit_once`), not the request's.
            order = self.strategy.force_exit_once(command.command_id, symbol, command.ts)
            if order is None:
                continue
            producer.produce(ORDERS, order.model_dump_json().encode(), key=order.symbol.encode())
            self.strategy.assume_filled(order)
            touched.add(symbol)
            self.metrics.orders.labels(
                strategy=self.strategy_id, side=order.side.value, reason=order.reason.value
            ).inc()
        self.strategy.remember_command(command.command_id)  # in the head record this batch writes
        logger.info(
            "force-exit command",
            extra={
                "event": "force_exit",
                "strategy": self.strategy_id,
                "command_id": command.command_id,
                "symbols": sorted(touched),
            },
        )
        return touched

    def _produce_bar(self, producer: Producer, symbol: str, bar: Bar) -> None:
        record = closed_bar(symbol, self.params.timeframe, bar, self.strategy_id)
        producer.produce(BARS, record.model_dump_json().encode(), key=symbol.encode())
        self.metrics.bars.labels(strategy=self.strategy_id).inc()

    def _produce_signal(self, producer: Producer, signal: Signal) -> None:
        producer.produce(SIGNALS, signal.model_dump_json().encode(), key=signal.symbol.encode())
        self.metrics.signals.labels(strategy=self.strategy_id, direction=signal.direction).inc()

    def _late_tick(self, tick: Tick) -> None:
        """A tick of a bar already closed (and traded on): counted and logged, never merged."""
        self.metrics.late_ticks.labels(strategy=self.strategy_id).inc()
        logger.warning(
            "late tick: its bar already closed; not merged",
            extra={"strategy": self.strategy_id, "symbol": tick.symbol, "ts": tick.ts.isoformat()},
        )

    def clock_due(self) -> bool:
        """Whether a bar is due to close on the clock while no record comes (the loop then runs an empty
        batch): only with a clock lateness set, for a live source."""
        if self.bar_lateness_s is None:
            return False
        now_ns = epoch_ns(datetime.now(UTC)) - int(self.bar_lateness_s * 1e9)
        return any(
            state.bars is not None and state.bars.due(now_ns) for state in self.strategy.symbols.values()
        )

    def _produce_state(self, producer: Producer, changed: set[str]) -> None:
        """The snapshot as records of the strategy's state topic, in the batch's transaction: the head and
        the groups holding a symbol that `changed` (`tradebot.strategy.state` says why groups)."""
        strategy = self.strategy
        if not self.layout.covers(strategy.symbols):
            self._lay_out()
        if self._dirty_all:
            changed = set(strategy.symbols)
        states = {symbol: strategy.symbol_snapshot(symbol) for symbol in changed & set(strategy.symbols)}
        for key, value in self.layout.records(states, strategy.head_snapshot()):
            producer.produce(self.state_topic, value, key=key)

    def committed(self) -> None:
        self._dirty_all = False
        sid = self.strategy_id
        self.metrics.ticks.labels(strategy=sid).inc(self._batch_ticks)
        self.metrics.transactions.labels(strategy=sid, result="committed").inc()
        self.metrics.equity.labels(strategy=sid).set(self.strategy.equity())
        self.metrics.batch_seconds.labels(strategy=sid).observe(time.perf_counter() - self._batch_started)
        self.metrics.process_seconds.labels(strategy=sid).observe(self._batch_processed - self._batch_started)

    def aborted(self, error: BusError) -> None:
        self.metrics.transactions.labels(strategy=self.strategy_id, result="aborted").inc()
