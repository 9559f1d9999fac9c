"""The state store in memory, for `--embedded` and tests: RedisStore's behaviour without Redis.

Logs keep entries in append order under increasing sequence numbers (Redis: stream ids); the query
semantics are RedisStore's (see adapters/redis_store.py): filters on strategy_id, symbol and
`since <= ts < until`, newest first by default, and an opaque cursor (the sequence number of the last
item returned) after which the next page continues. JSON goes in and out exactly as with Redis, so
both return equal dicts.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tradebot.adapters.store import Page, Query, ViewLostError, parse_cursor
from tradebot.core.cockpit import StrategyEvent
from tradebot.core.models import ClosedBar, Fill, OrderRequest, Position, Signal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class _Entry:
    seq: int
    strategy_id: str
    symbol: str
    ts: int  # epoch µs
    json: str


@dataclass
class _Log:
    entries: list[_Entry] = field(default_factory=list)
    next_seq: int = 1
    # Each strategy's entries, as RedisStore's strategy streams: a filtered page reads only them. Trimmed
    # when their strategy appends; a query skips those older than the log's oldest.
    by_strategy: dict[str, list[_Entry]] = field(default_factory=dict)

    def append(
        self, strategy_id: str, symbol: str, ts: datetime, raw: str, maxlen: int | None = None
    ) -> None:
        entry = _Entry(self.next_seq, strategy_id, symbol, _micros(ts), raw)
        self.entries.append(entry)
        self.next_seq += 1
        if maxlen is not None and len(self.entries) > maxlen:
            del self.entries[: len(self.entries) - max(maxlen, 0)]
        own = self.by_strategy.setdefault(strategy_id, [])
        own.append(entry)
        del own[: self._first_kept(own)]

    def _first_kept(self, entries: list[_Entry]) -> int:
        """Where the entries still in the log begin in `entries` (a strategy's, in append order)."""
        return (
            bisect.bisect_left(entries, self.entries[0].seq, key=lambda e: e.seq)
            if self.entries
            else len(entries)
        )

    def query(self, query: Query) -> Page:
        if query.limit < 1:
            raise ValueError("limit must be >= 1")
        after: int | None = None
        if query.cursor is not None:
            after = parse_cursor(query.cursor)[0]
        since = None if query.since is None else _micros(query.since)
        until = None if query.until is None else _micros(query.until)
        scanned, start = self.entries, 0
        if query.strategy_id is not None:
            scanned = self.by_strategy.get(query.strategy_id, [])
            start = self._first_kept(scanned)
        if query.newest_first:
            end = len(scanned) if after is None else bisect.bisect_left(scanned, after, key=lambda e: e.seq)
            candidates = (scanned[i] for i in range(end - 1, start - 1, -1))
        else:
            begin = 0 if after is None else bisect.bisect_right(scanned, after, key=lambda e: e.seq)
            candidates = (scanned[i] for i in range(max(begin, start), len(scanned)))
        found: list[_Entry] = []
        for entry in candidates:
            if (
                (query.strategy_id is None or entry.strategy_id == query.strategy_id)
                and (query.symbol is None or entry.symbol == query.symbol)
                and (since is None or entry.ts >= since)
                and (until is None or entry.ts < until)
            ):
                found.append(entry)
                if len(found) > query.limit:
                    break
        page = found[: query.limit]
        next_cursor = str(page[-1].seq) if len(found) > query.limit else None
        return Page(items=[json.loads(entry.json) for entry in page], next_cursor=next_cursor)


class MemoryStore:
    def __init__(self, *, stream_maxlen: int = 100_000) -> None:
        if stream_maxlen < 1:
            raise ValueError("stream_maxlen must be >= 1")
        self.stream_maxlen = stream_maxlen
        self._lock = asyncio.Lock()
        self._changes = 0  # not reset by clear(): see Store.changes
        self._reset()

    def _reset(self) -> None:
        self._last_prices: dict[str, tuple[float, datetime]] = {}
        self._prices: dict[str, list[tuple[datetime, float]]] = {}
        self._orders = _Log()
        self._fills = _Log()
        self._signals = _Log()
        self._events = _Log()
        self._bars: dict[str, _Log] = {}  # per timeframe
        self._last_bar: dict[tuple[str, str], int] = {}  # (timeframe, symbol) -> newest open time (µs)
        # The newest applied order ids (insertion order = offset order), bounded like RedisStore's.
        self._applied: dict[str, None] = {}
        self._applied_offset = -1
        self._positions: dict[tuple[str, str], Position] = {}
        self._equity: dict[str, list[tuple[datetime, float]]] = {}
        self._strategies: dict[str, str] = {}
        self._halted: set[str] = set()
        self._delivered: dict[str, float] = {}  # key -> expiry (monotonic seconds)

    async def ping(self) -> bool:
        return True

    # Prices.

    async def set_last_price(self, symbol: str, price: float, ts: datetime) -> None:
        async with self._lock:
            self._changes += 1
            self._last_prices[symbol] = (float(price), ts)

    async def last_prices(self) -> dict[str, tuple[float, datetime]]:
        async with self._lock:
            return dict(self._last_prices)

    async def append_price(self, symbol: str, price: float, ts: datetime, maxlen: int = 5000) -> None:
        async with self._lock:
            self._changes += 1
            _append_trimmed(self._prices.setdefault(symbol, []), (ts, float(price)), maxlen)

    async def append_prices(
        self, symbol: str, points: Sequence[tuple[float, datetime]], maxlen: int = 5000
    ) -> None:
        async with self._lock:
            self._changes += 1
            history = self._prices.setdefault(symbol, [])
            for price, ts in points:
                _append_trimmed(history, (ts, float(price)), maxlen)

    async def record_prices(
        self,
        latest: Mapping[str, tuple[float, datetime]],
        history: Mapping[str, Sequence[tuple[float, datetime]]],
        maxlen: int = 5000,
    ) -> None:
        for symbol, (price, ts) in latest.items():
            await self.set_last_price(symbol, price, ts)
        for symbol, points in history.items():
            await self.append_prices(symbol, points, maxlen)

    async def prices(self, symbol: str, limit: int = 1000) -> list[tuple[datetime, float]]:
        async with self._lock:
            return _newest(self._prices.get(symbol, []), limit)

    # The order log and fills.

    async def apply_fill(
        self,
        order: OrderRequest,
        fill: Fill,
        position: Position,
        source_offset: int,
        *,
        expect_applied: bool = False,
    ) -> bool:
        if fill.order_id != order.id:
            raise ValueError(f"fill is for order {fill.order_id!r}, not {order.id!r}")
        if (position.strategy_id, position.symbol) != (order.strategy_id, order.symbol):
            raise ValueError("the position must be the order's strategy and symbol")
        async with self._lock:
            if expect_applied and self._applied_offset < 0:
                raise ViewLostError()
            # As RedisStore: at or below the applied offset, or an id among the newest applied, was applied.
            if source_offset <= self._applied_offset or order.id in self._applied:
                return False
            self._applied[order.id] = None
            while len(self._applied) > self.stream_maxlen:
                del self._applied[next(iter(self._applied))]
            keep = self.stream_maxlen
            self._orders.append(order.strategy_id, order.symbol, order.ts, order.model_dump_json(), keep)
            self._fills.append(order.strategy_id, order.symbol, fill.ts, fill.model_dump_json(), keep)
            self._positions[(position.strategy_id, position.symbol)] = position
            self._applied_offset = source_offset
            self._changes += 1
            return True

    async def applied_offset(self) -> int:
        async with self._lock:
            return self._applied_offset

    async def orders(self, query: Query) -> Page:
        async with self._lock:
            return self._orders.query(query)

    async def fills(self, query: Query) -> Page:
        async with self._lock:
            return self._fills.query(query)

    async def position(self, strategy_id: str, symbol: str) -> Position | None:
        async with self._lock:
            return self._positions.get((strategy_id, symbol))

    async def positions(self, strategy_id: str | None = None) -> list[Position]:
        async with self._lock:
            return [
                self._positions[key]
                for key in sorted(self._positions)
                if strategy_id is None or key[0] == strategy_id
            ]

    # Signals and equity.

    async def append_signal(self, signal: Signal, maxlen: int = 5000) -> None:
        await self.append_signals([signal], maxlen)

    async def append_signals(self, signals: Sequence[Signal], maxlen: int = 5000) -> None:
        async with self._lock:
            for signal in signals:
                self._changes += 1
                self._signals.append(
                    signal.strategy_id, signal.symbol, signal.ts, signal.model_dump_json(), maxlen
                )

    async def append_bar(self, bar: ClosedBar, maxlen: int = 100_000) -> bool:
        async with self._lock:
            key, ts = (bar.timeframe, bar.symbol), _micros(bar.ts)
            if ts <= self._last_bar.get(key, -(2**63)):
                return False
            self._last_bar[key] = ts
            log = self._bars.setdefault(bar.timeframe, _Log())
            log.append(bar.source, bar.symbol, bar.ts, bar.model_dump_json(), maxlen)
            self._changes += 1
            return True

    async def bars(self, timeframe: str, query: Query) -> Page:
        async with self._lock:
            return self._bars.get(timeframe, _Log()).query(query)

    async def signals(self, query: Query) -> Page:
        async with self._lock:
            return self._signals.query(query)

    async def append_event(self, event: StrategyEvent, maxlen: int = 5000) -> None:
        async with self._lock:
            self._changes += 1
            self._events.append(
                event.strategy_id, event.symbol or "", event.ts, event.model_dump_json(), maxlen
            )

    async def events(self, query: Query) -> Page:
        async with self._lock:
            return self._events.query(query)

    async def append_equity(self, strategy_id: str, ts: datetime, equity: float, maxlen: int = 10000) -> None:
        async with self._lock:
            self._changes += 1
            _append_trimmed(self._equity.setdefault(strategy_id, []), (ts, float(equity)), maxlen)

    async def equity_curve(self, strategy_id: str, limit: int = 1000) -> list[tuple[datetime, float]]:
        async with self._lock:
            return _newest(self._equity.get(strategy_id, []), limit)

    # Strategies.

    async def register_strategy(self, strategy_id: str, info: dict[str, Any]) -> None:
        raw = json.dumps(info)
        async with self._lock:
            self._changes += 1
            self._strategies[strategy_id] = raw

    async def strategies(self) -> list[dict[str, Any]]:
        async with self._lock:
            return [
                {"id": sid, **json.loads(self._strategies[sid]), "halted": sid in self._halted}
                for sid in sorted(self._strategies)
            ]

    async def set_halted(self, strategy_id: str, halted: bool) -> None:
        async with self._lock:
            self._changes += 1
            if halted:
                self._halted.add(strategy_id)
            else:
                self._halted.discard(strategy_id)

    async def is_halted(self, strategy_id: str) -> bool:
        async with self._lock:
            return strategy_id in self._halted

    async def mark_delivered(self, key: str, ttl_s: int) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be >= 1")
        async with self._lock:
            now = time.monotonic()
            if len(self._delivered) % 1000 == 999:  # expired marks go now and then, as Redis' keys expire
                self._delivered = {k: until for k, until in self._delivered.items() if until > now}
            self._delivered[key] = now + ttl_s

    async def was_delivered(self, key: str) -> bool:
        async with self._lock:
            return self._delivered.get(key, 0.0) > time.monotonic()

    async def changes(self) -> int | None:
        async with self._lock:
            return self._changes

    async def clear(self) -> None:
        async with self._lock:
            self._changes += 1
            self._reset()

    async def close(self) -> None:
        pass


def _append_trimmed(points: list[tuple[datetime, float]], point: tuple[datetime, float], maxlen: int) -> None:
    points.append(point)
    if len(points) > maxlen:
        del points[: len(points) - max(maxlen, 0)]


def _newest(points: list[tuple[datetime, float]], limit: int) -> list[tuple[datetime, float]]:
    return list(points[-limit:]) if limit > 0 else []
