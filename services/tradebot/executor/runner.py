"""Consume orders, fill them, produce fills: exactly once; keep the Redis view in step with `fills`.

Orders are consumed with `read_committed` (only orders of committed strategy transactions exist), and
each batch of fills is produced in one transaction with the consumed offsets (`adapters/transactional.py`),
so every order gets exactly one fill record on the topic whatever crashes. The broker's book is rebuilt
from `fills` on start and after an abort, always after fencing the previous instance, so it holds every
fill that instance committed. Redis is a projection of `fills`: `apply_fill` is idempotent per order id, the projection
catches up from the topic on start, and when Redis comes back empty it is rebuilt from the topic.
The `signals` topic is projected to Redis too (what GET /signals reads), at least once, bounded to the
stream retention: a signal log for the dashboard, whose full history stays on the topic.

Halts fail closed: whether a strategy may enter comes from `strategy-control` (compacted, written by the
API), read in full on every rebuild and consumed in the same transactional loop as `orders`, never from
Redis; the executor projects it to Redis for readers. A flushed or unreachable Redis cannot lift a halt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError

from tradebot.adapters.bus import PROJECTION_FETCH_WAIT_MS, Bus, BusError, Consumer, Producer, Record
from tradebot.adapters.store import Store, StoreError, ViewLostError
from tradebot.adapters.topics import (
    BARS,
    CONTROL,
    FILLS,
    ORDERS,
    POSITIONS,
    SIGNALS,
    FillRecord,
    HaltCommand,
    position_key,
)
from tradebot.adapters.transactional import TransactionalLoop
from tradebot.core.cockpit import fill_event
from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.models import ClosedBar, Fill, FillStatus, OrderRequest, Position, RejectCode, Signal
from tradebot.executor.broker import PaperBroker
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.kit.metrics import ConsumerLagGauge, PerRegistry

logger = logging.getLogger(__name__)

# The longest a rebuild may take reading `positions` or `fills` (a first replay of a long `fills` included).
REBUILD_TIMEOUT_S = 600.0


@dataclass
class ExecutorMetrics(PerRegistry):
    """The executor's metrics (catalogued in services/README.md)."""

    registry: CollectorRegistry
    received: Counter = field(init=False)
    filled: Counter = field(init=False)
    rejected: Counter = field(init=False)
    duplicates: Counter = field(init=False)
    invalid: Counter = field(init=False)
    latency: Histogram = field(init=False)
    realized: Gauge = field(init=False)
    unrealized: Gauge = field(init=False)
    equity: Gauge = field(init=False)
    exposure: Gauge = field(init=False)
    drawdown: Gauge = field(init=False)
    halted: Gauge = field(init=False)
    projected: Counter = field(init=False)
    rebuilds: Counter = field(init=False)
    lag: ConsumerLagGauge = field(init=False)
    _known: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        r = self.registry
        per_strategy = ["strategy"]
        self.received = Counter(
            "tradebot_executor_orders_received", "Orders read from `orders`.", per_strategy, registry=r
        )
        self.filled = Counter("tradebot_executor_orders_filled", "Orders filled.", per_strategy, registry=r)
        self.rejected = Counter(
            "tradebot_executor_orders_rejected",
            "Orders refused, by reason code.",
            ["strategy", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "tradebot_executor_orders_duplicate", "Orders seen again (ignored).", registry=r
        )
        self.invalid = Counter(
            "tradebot_executor_orders_invalid", "Unreadable messages on `orders`.", registry=r
        )
        self.latency = Histogram(
            "tradebot_executor_tick_to_fill_seconds",
            "From the causing tick's timestamp to its order's fill.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.realized = Gauge(
            "tradebot_executor_realized_pnl", "Realised P&L net of commissions.", per_strategy, registry=r
        )
        self.unrealized = Gauge(
            "tradebot_executor_unrealized_pnl",
            "Unrealised P&L of open positions at the last prices.",
            per_strategy,
            registry=r,
        )
        self.equity = Gauge(
            "tradebot_executor_equity",
            "The strategy's own initial cash plus realised and unrealised P&L.",
            per_strategy,
            registry=r,
        )
        self.exposure = Gauge(
            "tradebot_executor_gross_exposure",
            "Sum of the absolute notional of open positions at the last prices.",
            per_strategy,
            registry=r,
        )
        self.drawdown = Gauge(
            "tradebot_executor_drawdown_ratio",
            "Fall of equity from its peak over the fills history, 0 to 1.",
            per_strategy,
            registry=r,
        )
        self.halted = Gauge(
            "tradebot_executor_strategy_halted", "1 while the strategy is halted.", per_strategy, registry=r
        )
        self.projected = Counter(
            "tradebot_executor_store_fills_applied", "Fills applied to the Redis view.", registry=r
        )
        self.rebuilds = Counter(
            "tradebot_executor_store_rebuilds", "Rebuilds of the Redis view from `fills`.", registry=r
        )
        self.lag = ConsumerLagGauge.of(r)

    def know(self, strategy_id: str) -> None:
        """A strategy's series start at 0 once it is known, so rates and alerts see a 0, not nothing."""
        if strategy_id in self._known:
            return
        self._known.add(strategy_id)
        self.received.labels(strategy=strategy_id)
        self.filled.labels(strategy=strategy_id)
        for code in RejectCode:
            self.rejected.labels(strategy=strategy_id, reason=code.value)
        self.halted.labels(strategy=strategy_id)
        self.drawdown.labels(strategy=strategy_id)


class _BookValue(NamedTuple):
    realized: float
    unrealized: float
    exposure: float
    equity: float


def _log_fill(fill: Fill, order: OrderRequest) -> None:
    """One structured line per fill or refusal: a trader's events in the service's log (entries, exits,
    stop-outs, force-exits, refusals), not only in the store."""
    event = fill_event(fill, order.ts)
    logger.info(
        event.message,
        extra={
            "event": event.kind,
            "strategy": fill.strategy_id,
            "symbol": fill.symbol,
            "side": fill.side.value,
            "qty": fill.qty,
            "price": fill.price,
            "reason": fill.reason.value,
            "status": fill.status.value,
            "reject_code": fill.reject_code.value if fill.reject_code else None,
            "order_id": fill.order_id,
            "event_ts": order.ts.isoformat(),
        },
    )


class ExecutorRunner:
    def __init__(
        self,
        *,
        bus: Bus,
        store: Store,
        broker: PaperBroker,
        metrics: ExecutorMetrics,
        initial_cash: float = DEFAULT_INITIAL_CASH,
        group_id: str = "executor",
        batch_max: int = 2000,
        poll_timeout_s: float = 0.02,
        signals_maxlen: int = 100_000,
    ) -> None:
        self.bus = bus
        self.signals_maxlen = signals_maxlen
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.initial_cash = initial_cash
        self.group_id = group_id
        self.loop = TransactionalLoop(
            bus,
            self,
            group=group_id,
            topics=[ORDERS, CONTROL],
            batch_max=batch_max,
            poll_timeout_s=poll_timeout_s,
            lag=metrics.lag,
        )
        self._last_prices: dict[str, float] = {}
        # From `strategy-control` only (see the module docstring); strategy id -> halted.
        self._halted: dict[str, bool] = {}
        self._registered: set[str] = set()
        # Each strategy's own initial cash as it registered it; `initial_cash` for one that did not.
        self._initial_cash: dict[str, float] = {}
        self._registration_read: set[str] = set()
        self._applied_offset = -1
        # The latest position per (strategy, symbol) as the projection has read it from `fills`.
        self._projected: dict[tuple[str, str], Position] = {}
        # Each strategy's highest equity over the fills history and the live marks since (drawdown).
        self._peak_equity: dict[str, float] = {}

    @property
    def ready(self) -> bool:
        return self.loop.ready

    async def run(self, shutdown: ShutdownEvent) -> None:
        # The projection reads `fills` from the start under a fresh group (nothing committed): fills the
        # store already has are skipped by order id, missing ones (a crash between commit and store
        # write, or a store that lost its data) are applied.
        # The projections feed people (the API, the dashboard), not the next hop: they ask Kafka less often.
        tail = self.bus.consumer(
            f"{self.group_id}-projection-{time.time_ns()}",
            [FILLS],
            read_committed=True,
            fetch_wait_ms=PROJECTION_FETCH_WAIT_MS,
        )
        # Signals resume where the last instance committed (a stable group), so a restart neither drops
        # nor, short of a crash between the write and the commit, repeats them.
        signals = self.bus.consumer(
            f"{self.group_id}-signals", [SIGNALS], read_committed=True, fetch_wait_ms=PROJECTION_FETCH_WAIT_MS
        )
        bars = self.bus.consumer(
            f"{self.group_id}-bars", [BARS], read_committed=True, fetch_wait_ms=PROJECTION_FETCH_WAIT_MS
        )
        try:
            # One task group: a bug in the projection or the watcher stops the executor (and the loop)
            # instead of leaving it filling orders with a dead view behind it.
            async with asyncio.TaskGroup() as tasks:
                watcher = tasks.create_task(self._watch_store(shutdown), name="executor-store-watcher")
                tasks.create_task(self._project_tail(tail, shutdown), name="executor-projection")
                signal_task = tasks.create_task(
                    self._project_signals(signals, shutdown), name="executor-signals"
                )
                bar_task = tasks.create_task(self._project_bars(bars, shutdown), name="executor-bars")
                await self.loop.run(shutdown)
                watcher.cancel()
                signal_task.cancel()
                bar_task.cancel()
        finally:
            await asyncio.to_thread(tail.close)
            await asyncio.to_thread(signals.close)
            await asyncio.to_thread(bars.close)

    # -- the transactional loop's batch processor: orders -> fills ----------------------------------
    def rebuild(self) -> None:
        """The book as the committed fills left it: each position from the compacted `positions` topic
        (written in the same transactions as the fills), and the recent order ids from the tail of
        `fills`; streamed, so neither time nor memory grows with the whole history. A `positions`
        topic that is still empty while `fills` is not (a book from before it existed) is replayed
        from `fills` once, streamed too; the next fills write their positions."""
        started = time.monotonic()
        self.broker.books.clear()
        self.broker.seen.clear()
        positions = 0
        for batch in self.bus.scan(POSITIONS, read_committed=True, timeout=REBUILD_TIMEOUT_S):
            for record in batch:
                try:
                    self.broker.restore(Position.model_validate_json(record.value))
                except ValidationError:
                    logger.error("unreadable record on positions", extra={"offset": record.offset})
                positions += 1
        fills = 0
        # With positions known only the newest order ids are needed; without, every fill is.
        last = self.broker.seen_max if positions else None
        for batch in self.bus.scan(FILLS, last=last, read_committed=True, timeout=REBUILD_TIMEOUT_S):
            for record in batch:
                try:
                    fill_record = FillRecord.model_validate_json(record.value)
                except ValidationError:
                    logger.error("unreadable record on fills", extra={"offset": record.offset})
                    continue
                if positions:
                    self.broker.remember(fill_record.order.id)
                else:
                    self.broker.replay(fill_record)
                fills += 1
        logger.info(
            "executor book rebuilt",
            extra={
                "positions_read": positions,
                "fills_read": fills,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        halted: dict[str, bool] = {}
        for record in self.bus.read_all(CONTROL, read_committed=True, timeout=60.0):
            command = self._command(record)
            if command is not None:
                halted[command.strategy_id] = command.halted
        self._halted = halted

    @staticmethod
    def _command(record: Record) -> HaltCommand | None:
        try:
            return HaltCommand.model_validate_json(record.value)
        except ValidationError:
            logger.error("unreadable record on strategy-control", extra={"offset": record.offset})
            return None

    def process_batch(self, records: list[Record], producer: Producer) -> None:
        now = datetime.now(UTC)
        wall = time.time()
        # Commands first: a halt read in the same batch as an order refuses it even if it came later
        # (failing closed), never the other way round.
        for record in records:
            if record.topic == CONTROL:
                command = self._command(record)
                if command is not None:
                    self._halted[command.strategy_id] = command.halted
        for record in records:
            if record.topic == CONTROL:
                continue
            try:
                order = OrderRequest.model_validate_json(record.value)
            except ValidationError as exc:
                self.metrics.invalid.inc()
                logger.error(
                    "unreadable order", extra={"offset": record.offset, "error": str(exc.errors()[0])}
                )
                continue
            result = self.broker.execute(
                order,
                now=now,
                halted=self._halted.get(order.strategy_id, False),
                last_price=self._last_prices.get(order.symbol),
            )
            if result is None:
                self.metrics.duplicates.inc()
                continue
            producer.produce(FILLS, result.model_dump_json().encode(), key=order.symbol.encode())
            if result.fill.status is FillStatus.FILLED:  # a refusal leaves the position as it was
                producer.produce(
                    POSITIONS,
                    result.position.model_dump_json().encode(),
                    key=position_key(order.strategy_id, order.symbol),
                )
            self.metrics.know(order.strategy_id)
            self.metrics.received.labels(strategy=order.strategy_id).inc()
            if result.fill.status is FillStatus.FILLED:
                self.metrics.filled.labels(strategy=order.strategy_id).inc()
            else:
                code = result.fill.reject_code.value if result.fill.reject_code else "unknown"
                self.metrics.rejected.labels(strategy=order.strategy_id, reason=code).inc()
            _log_fill(result.fill, order)
            lag = wall - order.ts.timestamp()
            if 0.0 <= lag < 60.0:  # a live tick's age; replays of old data are not latency
                self.metrics.latency.observe(lag)

    def committed(self) -> None:
        pass  # the fills reach the Redis view through the projection, which reads them committed

    def aborted(self, error: BusError) -> None:
        pass  # rebuild() drops the aborted batch's fills from the book

    # -- the Redis view ---------------------------------------------------------------------------
    async def _project(self, records: list[Record]) -> None:
        for record in records:
            try:
                fill_record = FillRecord.model_validate_json(record.value)
            except ValidationError:
                continue
            self._projected[(fill_record.order.strategy_id, fill_record.order.symbol)] = fill_record.position
            try:
                applied = await self.store.apply_fill(
                    fill_record.order,
                    fill_record.fill,
                    fill_record.position,
                    record.offset,
                    expect_applied=self._applied_offset >= 0,
                )
            except ViewLostError:
                # Redis came back empty: applying on would leave it holding only what follows. The
                # watcher rebuilds the whole view from the topic (these records included).
                logger.warning("the store lost its fills; rebuilding it from the topic")
                self._applied_offset = -2
                return
            self._applied_offset = max(self._applied_offset, record.offset)
            if applied:
                self.metrics.projected.inc()
                if fill_record.fill.status is FillStatus.FILLED:
                    await self._equity_point(fill_record)

    async def _equity_point(self, record: FillRecord) -> None:
        """The strategy's equity right after this fill, from the positions the fills topic recorded up
        to it (each marked at its own last fill price), so the curve follows event time."""
        sid = record.order.strategy_id
        if sid not in self._registration_read:
            # A strategy registers before it sends its first order: read its initial cash before
            # the first point of its curve (the watcher may not have seen the registration yet).
            self._registration_read.add(sid)
            await self._read_registrations()
        value = self._value(sid, {})
        self._peak_equity[sid] = max(self._peak_equity.get(sid, self._cash_of(sid)), value.equity)
        await self.store.append_equity(sid, record.order.ts, value.equity)

    def _value(self, strategy_id: str, marks: dict[str, float]) -> _BookValue:
        """The strategy's positions valued at `marks` (a position's own last fill price where absent)."""
        realized = unrealized = exposure = 0.0
        for (sid, symbol), position in self._projected.items():
            if sid != strategy_id:
                continue
            realized += position.realized_pnl - position.commissions
            if position.qty != 0.0:
                mark = marks.get(symbol, position.last_price)
                unrealized += position.qty * (mark - position.avg_price)
                exposure += abs(position.qty) * mark
        return _BookValue(realized, unrealized, exposure, self._cash_of(strategy_id) + realized + unrealized)

    def _cash_of(self, strategy_id: str) -> float:
        return self._initial_cash.get(strategy_id, self.initial_cash)

    async def _read_registrations(self) -> None:
        """Each strategy's own initial cash, from the strategies' registrations (halts come from Kafka)."""
        registered = await self.store.strategies()
        self._registered = {s["id"] for s in registered}
        self._initial_cash.update(
            {s["id"]: float(s["initial_cash"]) for s in registered if s.get("initial_cash") is not None}
        )

    def update_risk_metrics(self) -> None:
        """P&L, equity, exposure and drawdown per strategy, marked at the latest prices the feed saw
        (a position's own last fill price until then)."""
        for sid in self._registered | set(self._halted) | {sid for sid, _ in self._projected}:
            value = self._value(sid, self._last_prices)
            peak = max(self._peak_equity.get(sid, self._cash_of(sid)), value.equity)
            self._peak_equity[sid] = peak
            self.metrics.know(sid)
            self.metrics.realized.labels(strategy=sid).set(value.realized)
            self.metrics.unrealized.labels(strategy=sid).set(value.unrealized)
            self.metrics.equity.labels(strategy=sid).set(value.equity)
            self.metrics.exposure.labels(strategy=sid).set(value.exposure)
            self.metrics.drawdown.labels(strategy=sid).set((peak - value.equity) / peak if peak > 0 else 0.0)
            self.metrics.halted.labels(strategy=sid).set(1.0 if self._halted.get(sid) else 0.0)

    async def _project_tail(self, tail: Consumer, shutdown: ShutdownEvent) -> None:
        while not shutdown.is_set():
            try:
                records = await asyncio.to_thread(tail.poll, 0.1, 1000)
            except BusError as exc:  # Kafka away: the tail resumes where it was once it is back
                logger.warning("reading fills failed", extra={"error": str(exc), "code": exc.name})
                await shutdown.sleep(1.0)
                continue
            if records:
                try:
                    await self._project(records)
                except StoreError as exc:  # Redis down: the watcher rebuilds once it is back
                    logger.warning("store update failed", extra={"error": str(exc)})
                    self._applied_offset = -2  # force a catch-up from the topic

    async def _project_signals(self, consumer: Consumer, shutdown: ShutdownEvent) -> None:
        """Appends each committed signal to the store's bounded signal log, a poll batch a round trip."""

        async def append(records: list[Record]) -> None:
            signals = _readable(records, Signal)
            await self.store.append_signals(signals, maxlen=self.signals_maxlen)

        await self._project_log(consumer, SIGNALS, append, shutdown)

    async def _project_bars(self, consumer: Consumer, shutdown: ShutdownEvent) -> None:
        """Appends each committed bar to its timeframe's log, once per open time (several strategies on
        one timeframe publish the same bars)."""

        async def append(records: list[Record]) -> None:
            for bar in _readable(records, ClosedBar):
                await self.store.append_bar(bar, maxlen=self.signals_maxlen)

        await self._project_log(consumer, BARS, append, shutdown)

    async def _project_log(
        self,
        consumer: Consumer,
        topic: str,
        append: Callable[[list[Record]], Awaitable[None]],
        shutdown: ShutdownEvent,
    ) -> None:
        """Appends the committed records of `topic` to the store, a poll batch at a time, then commits the
        group's offsets; a batch the store refused is not committed and is read again after a restart."""
        while not shutdown.is_set():
            try:
                records = await asyncio.to_thread(consumer.poll, 0.1, 1000)
            except BusError as exc:
                logger.warning(f"reading {topic} failed", extra={"error": str(exc), "code": exc.name})
                await shutdown.sleep(1.0)
                continue
            if not records:
                continue
            try:
                await append(records)
                await asyncio.to_thread(consumer.commit)
            except StoreError as exc:  # Redis away: these records miss the log (the topic keeps them)
                logger.warning("store update failed", extra={"error": str(exc)})
            except BusError as exc:  # not committed now: the next commit covers these offsets
                logger.warning(f"committing {topic} failed", extra={"error": str(exc), "code": exc.name})

    async def _watch_store(self, shutdown: ShutdownEvent) -> None:
        """Refreshes last prices, projects the halts to the store and rebuilds it when it lost what it held."""
        while not await shutdown.sleep(0.25):
            try:
                self._last_prices = {
                    symbol: price for symbol, (price, _) in (await self.store.last_prices()).items()
                }
                await self._read_registrations()
                for sid, halted in list(self._halted.items()):
                    if await self.store.is_halted(sid) != halted:
                        await self.store.set_halted(sid, halted)
                self.update_risk_metrics()
                stored = await self.store.applied_offset()
                if stored < self._applied_offset or self._applied_offset == -2:
                    logger.warning(
                        "the store is behind the fills topic; rebuilding it", extra={"store_offset": stored}
                    )
                    self.metrics.rebuilds.inc()
                    self._applied_offset = -1
                    await self._project(
                        await asyncio.to_thread(self.bus.read_all, FILLS, read_committed=True, timeout=60.0)
                    )
            except StoreError as exc:
                logger.warning("store not reachable", extra={"error": str(exc)})
            except BusError as exc:  # the rebuild could not read `fills`: tried again next time round
                logger.warning("rebuilding the store failed", extra={"error": str(exc), "code": exc.name})


Model = TypeVar("Model", bound=BaseModel)


def _readable(records: list[Record], model: type[Model]) -> list[Model]:
    """The records of a projected topic that parse as `model`; one that does not is logged and skipped:
    a foreign producer's garbage must not stop the projection."""
    parsed: list[Model] = []
    for record in records:
        try:
            parsed.append(model.model_validate_json(record.value))
        except ValidationError:
            logger.error(f"unreadable record on {record.topic}", extra={"offset": record.offset})
    return parsed
