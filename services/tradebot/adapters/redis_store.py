"""The state store over Redis (redis.asyncio); every key starts with `{prefix}:`.

Keys:
    {prefix}:price:last          hash   symbol -> JSON [price, iso ts]
    {prefix}:prices:{symbol}     stream price, ts (iso); trimmed to `maxlen` exactly
    {prefix}:orders              stream json, order_id, strategy_id, symbol, ts (epoch µs); about `stream_maxlen`
    {prefix}:fills               stream json, order_id, strategy_id, symbol, ts (epoch µs); about `stream_maxlen`
    {prefix}:events              stream json, strategy_id, symbol, ts (epoch µs): commands given (halt, resume, force-exit)
    {prefix}:signals             stream json, strategy_id, symbol, ts (epoch µs); trimmed to `maxlen` (the executor's projection of `signals` passes `stream_maxlen`)
    {prefix}:{log}:strategy:{id} stream strategy_id, symbol, ts of one strategy's entries in the orders, fills, events and
                                 signals logs, each under its id there (the same cursor on both); trimmed with its log
    {prefix}:{log}:indexed       string the newest id of the log that its strategy streams hold (see _INDEX_LOG)
    {prefix}:bars:{timeframe}    stream json, strategy_id (the publisher), symbol, ts (the bar's open, epoch µs); trimmed to `maxlen`
    {prefix}:bars:last:{timeframe} hash symbol -> open time (epoch µs) of the newest bar appended: one bar per open time
    {prefix}:applied_ids         zset   the newest `stream_maxlen` (+100) applied order ids, scored by offset
    {prefix}:applied_offset      string the `fills` topic offset of the last applied fill
    {prefix}:positions           hash   "{strategy_id}|{symbol}" -> Position JSON
    {prefix}:equity:{strategy}   stream ts (iso), equity; trimmed to `maxlen`
    {prefix}:strategies          hash   strategy id -> info JSON
    {prefix}:halted              set    halted strategy ids
    {prefix}:delivered:{key}     string a notification delivered (the notifier's "sink|event id"), expires after a TTL

Query semantics (shared with MemoryStore): the logs are ordered by when an entry was appended
(newest first by default); `strategy_id` and `symbol` filter exactly; `since <= ts < until` on the
message's own `ts`. The cursor is the stream id of the last item of the previous page, and the next
page continues strictly after it, so walking the pages neither skips nor repeats an entry, even
while new ones are appended. `next_cursor` is None on the last page.

A page filtered by strategy (the orders, fills, events and signals logs) reads that strategy's stream, then the
page's entries from the log in one round trip, so it costs three round trips however many entries of other
strategies the log holds (issue 14.11: a strategy with no entries scanned all 20k of the log, 1,251 calls). Those
streams keep what a query filters on, not the JSON: whole copies would double the memory of the logs (68 MB more
for 100k orders and fills, against the chart's 200 MB `maxmemory`), for one round trip less.

The price, signal and equity streams are trimmed exactly (`MAXLEN n`, not `~`) so `maxlen` means the same here
and in memory. The order log and fills are trimmed approximately (`MAXLEN ~ stream_maxlen`: whole macro nodes,
cheap) to a retention: the full history stays on the `fills` topic.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tradebot.adapters.store import MAX_CURSOR_PART, Page, Query, StoreError, ViewLostError, parse_cursor
from tradebot.core.cockpit import StrategyEvent
from tradebot.core.models import ClosedBar, Fill, OrderRequest, Position, Signal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCAN_CHUNK = 500
# The key of Store.changes: moved on by every write, in the same transaction or script as the write.
CHANGES = "changes"

# What a strategy stream keeps of an entry: what a query filters on, under the entry's id (the JSON is read from
# the log), so the streams add about a tenth to the memory of their logs, not as much again.
_ENTRY_KEYS = """
local function entry_keys(fields)
    local kept = {}
    for i = 1, #fields, 2 do
        local name = fields[i]
        if name == 'strategy_id' or name == 'symbol' or name == 'ts' then
            kept[#kept + 1] = name
            kept[#kept + 1] = fields[i + 1]
        end
    end
    return kept
end
"""

# Appends an entry to a log and its keys, under the same id, to its strategy's stream, which is trimmed to the
# log's oldest id; then moves the log's `indexed` mark to the new id if it was at the log's newest before (an
# entry appended by a version without strategy streams leaves it behind: _INDEX_LOG catches up).
_INDEXED_XADD = (
    _ENTRY_KEYS
    + """
local function indexed_xadd(log, index, mark, trim, maxlen, fields)
    local before = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)[1]
    local added = {'XADD', log, 'MAXLEN', trim, maxlen, '*'}
    for _, value in ipairs(fields) do added[#added + 1] = value end
    local id = redis.call(unpack(added))
    local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1][1]
    local copy = {'XADD', index, 'MINID', '~', oldest, id}
    for _, value in ipairs(entry_keys(fields)) do copy[#copy + 1] = value end
    redis.call(unpack(copy))
    if not before or redis.call('GET', mark) == before[1] then
        redis.call('SET', mark, id)
    end
end
"""
)

# KEYS: applied, orders, fills, positions, applied_offset, orders' strategy stream, fills' strategy stream,
#       orders' indexed mark, fills' indexed mark, the change counter
# ARGV: order id, order json, strategy, symbol, order ts, fill json, fill ts, position field, position json, offset,
#       retention (entries kept in the logs and ids in the applied set), expect applied (1: the caller applied
#       fills here before, so no applied offset means the view was wiped: -1, no change)
# A fill at or below the applied offset was applied already (`fills` has one partition: offsets only grow);
# the applied set, the newest ids by offset, catches the same order id again at a later offset. Nothing, the
# strategy streams included, is written for a fill applied already.
_APPLY_FILL = (
    _INDEXED_XADD
    + """
local stored = redis.call('GET', KEYS[5])
if not stored and ARGV[12] == '1' then
    return -1
end
local last = tonumber(stored or '-1')
if tonumber(ARGV[10]) <= last or redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    return 0
end
local keep = tonumber(ARGV[11])
redis.call('ZADD', KEYS[1], ARGV[10], ARGV[1])
if redis.call('ZCARD', KEYS[1]) > keep + 100 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -keep - 1)
end
indexed_xadd(KEYS[2], KEYS[6], KEYS[8], '~', keep,
    {'json', ARGV[2], 'order_id', ARGV[1], 'strategy_id', ARGV[3], 'symbol', ARGV[4], 'ts', ARGV[5]})
indexed_xadd(KEYS[3], KEYS[7], KEYS[9], '~', keep,
    {'json', ARGV[6], 'order_id', ARGV[1], 'strategy_id', ARGV[3], 'symbol', ARGV[4], 'ts', ARGV[7]})
redis.call('HSET', KEYS[4], ARGV[8], ARGV[9])
redis.call('SET', KEYS[5], ARGV[10])
redis.call('INCR', KEYS[10])
return 1
"""
)

# KEYS: log, its strategy stream, its indexed mark, the change counter. ARGV: '~' or '=' (trimming), maxlen, the
# field/value pairs.
_APPEND_INDEXED = (
    _INDEXED_XADD
    + """
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
indexed_xadd(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], fields)
redis.call('INCR', KEYS[4])
"""
)

# KEYS: the last-price hash, the change count, then the price stream of each history in ARGV[3], in order.
# ARGV: the streams' maxlen; the last prices, JSON {symbol: stored value}; the histories, JSON
# [[[price, ts], ...], ...] as texts. The feed's whole periodic write in one call: as a pipeline of XADDs
# it cost the feed's event loop tens of milliseconds per write at 5k ticks/s (building each command in
# Python), during which no tick was read.
_RECORD_PRICES = """
for symbol, value in pairs(cjson.decode(ARGV[2])) do
    redis.call('HSET', KEYS[1], symbol, value)
end
for i, points in ipairs(cjson.decode(ARGV[3])) do
    for _, point in ipairs(points) do
        redis.call('XADD', KEYS[i + 2], 'MAXLEN', '=', ARGV[1], '*', 'price', point[1], 'ts', point[2])
    end
end
redis.call('INCR', KEYS[2])
"""

# KEYS: log, its indexed mark. ARGV: the strategy streams' key prefix ("{log}:strategy:").
# Returns the log's oldest id (false when empty), after making the strategy streams hold every entry of the
# log: when the mark is behind (data written before they existed, an upgrade: the mark is absent; or by such a
# version since), the entries after the mark are copied; if that finds a copy out of order (a newer version
# appended meanwhile), each strategy stream in the log is written again from the start. Once, atomically (it
# names the strategy streams itself, not in KEYS: one Redis, as every script here assumes, not a Cluster).
_INDEX_LOG = (
    _ENTRY_KEYS
    + """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if not newest then
    return false
end
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
local mark = redis.call('GET', KEYS[2])
if mark == newest[1] then
    return oldest
end
local function copy_from(start, rewrite)
    local rewritten = {}
    while true do
        local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
        for _, entry in ipairs(entries) do
            local fields = entry[2]
            local strategy = ''
            for i = 1, #fields, 2 do
                if fields[i] == 'strategy_id' then strategy = fields[i + 1] end
            end
            local index = ARGV[1] .. strategy
            if rewrite and not rewritten[index] then
                redis.call('DEL', index)
                rewritten[index] = true
            end
            local copy = {'XADD', index, entry[1]}
            for _, value in ipairs(entry_keys(fields)) do copy[#copy + 1] = value end
            local added = redis.pcall(unpack(copy))
            if type(added) == 'table' and added.err then
                return false
            end
        end
        if #entries < 1000 then
            return true
        end
        start = '(' .. entries[#entries][1]
    end
end
if not (mark and copy_from('(' .. mark, false)) then
    copy_from('-', true)
end
redis.call('SET', KEYS[2], newest[1])
return oldest
"""
)

# KEYS: bars stream, last-bar hash, the change counter. ARGV: symbol, open time (µs), json, publisher, maxlen.
# A bar at or before the symbol's newest is one already kept (another strategy on the timeframe published
# it, or a redelivery): 0, no change.
_APPEND_BAR = """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-9223372036854775807')
if tonumber(ARGV[2]) <= last then
    return 0
end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], '*', 'json', ARGV[3], 'strategy_id', ARGV[4], 'symbol', ARGV[1], 'ts', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[3])
return 1
"""


# KEYS: a log. ARGV: entry ids. The JSON of each entry, false (nil) for one trimmed since it was found: one round
# trip and one flat answer for a page (a pipeline of one XRANGE per entry cost most of a 1,000-entry page).
_ENTRY_JSON = """
local found = {}
for i, id in ipairs(ARGV) do
    found[i] = false
    local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
    if entry then
        local fields = entry[2]
        for j = 1, #fields, 2 do
            if fields[j] == 'json' then found[i] = fields[j + 1] end
        end
    end
end
return found
"""


def micros(ts: datetime) -> int:
    """Microseconds since the epoch, exactly (the `ts` index of the logs)."""
    return (ts - _EPOCH) // timedelta(microseconds=1)


def check_apply(order: OrderRequest, fill: Fill, position: Position) -> None:
    if fill.order_id != order.id:
        raise ValueError(f"fill is for order {fill.order_id!r}, not {order.id!r}")
    if (position.strategy_id, position.symbol) != (order.strategy_id, order.symbol):
        raise ValueError("the position must be the order's strategy and symbol")


def check_query(query: Query) -> None:
    if query.limit < 1:
        raise ValueError("limit must be >= 1")


P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def _as_store_error(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            transient = isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)
            raise StoreError(f"redis {method.__name__}: {exc}", retriable=transient) from exc

    return translated


def _store_errors(cls: C) -> C:
    """Every public coroutine of `cls` raises `StoreError` where redis-py raised a RedisError or OSError,
    so callers handle the store's failures without knowing it is Redis."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _as_store_error(member))
    return cls


@_store_errors
class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        ssl_ca_file: str | None = None,
        ssl_ca_pem: str | None = None,
        prefix: str = "tradebot",
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        stream_maxlen: int = 100_000,
    ) -> None:
        if not prefix:
            raise ValueError("prefix must not be empty")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        if stream_maxlen < 1:
            raise ValueError("stream_maxlen must be >= 1")
        self.stream_maxlen = stream_maxlen
        # Every call is bounded: a Redis that stops answering (paused, partitioned, overloaded) raises
        # a retriable StoreError after `timeout_s` instead of hanging the caller's event loop task.
        # A rediss:// URL means TLS; the server's certificate is checked against the given CA (else the
        # system's CAs). An ACL user is the URL's user name (`rediss://user:pw@host`).
        tls: dict[str, Any] = {}
        if ssl_ca_file is not None:
            tls["ssl_ca_certs"] = ssl_ca_file
        if ssl_ca_pem is not None:
            tls["ssl_ca_data"] = ssl_ca_pem
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s,
            **tls,
        )
        self._prefix = prefix
        self._apply_fill = self._redis.register_script(_APPLY_FILL)
        self._append_bar = self._redis.register_script(_APPEND_BAR)
        self._append_indexed = self._redis.register_script(_APPEND_INDEXED)
        self._record_prices = self._redis.register_script(_RECORD_PRICES)
        self._index_log = self._redis.register_script(_INDEX_LOG)
        self._entry_json = self._redis.register_script(_ENTRY_JSON)

    @asynccontextmanager
    async def _counted(self, *, transaction: bool = True) -> AsyncIterator[Any]:
        """A pipeline for a write; its last command moves the change count on (Store.changes), so a reader that
        sees the count sees the write."""
        async with self._redis.pipeline(transaction=transaction) as pipe:
            yield pipe
            await pipe.incr(self._key(CHANGES)).execute()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    # Prices.

    async def set_last_price(self, symbol: str, price: float, ts: datetime) -> None:
        await self.record_prices({symbol: (price, ts)}, {})

    async def last_prices(self) -> dict[str, tuple[float, datetime]]:
        raw: dict[str, str] = await self._redis.hgetall(self._key("price", "last"))
        result: dict[str, tuple[float, datetime]] = {}
        for symbol, value in raw.items():
            price, ts = json.loads(value)
            result[symbol] = (float(price), datetime.fromisoformat(ts))
        return result

    async def append_price(self, symbol: str, price: float, ts: datetime, maxlen: int = 5000) -> None:
        await self.append_prices(symbol, [(price, ts)], maxlen)

    async def append_prices(
        self, symbol: str, points: Sequence[tuple[float, datetime]], maxlen: int = 5000
    ) -> None:
        await self.record_prices({}, {symbol: points}, maxlen)

    async def record_prices(
        self,
        latest: Mapping[str, tuple[float, datetime]],
        history: Mapping[str, Sequence[tuple[float, datetime]]],
        maxlen: int = 5000,
    ) -> None:
        kept = {symbol: points[-maxlen:] for symbol, points in history.items() if points}
        if not latest and not kept:
            return
        await self._record_prices(
            keys=[
                self._key("price", "last"),
                self._key(CHANGES),
                *(self._key("prices", symbol) for symbol in kept),
            ],
            args=[
                maxlen,
                json.dumps({s: json.dumps([p, ts.isoformat()]) for s, (p, ts) in latest.items()}),
                json.dumps(
                    [
                        [[repr(float(price)), ts.isoformat()] for price, ts in points]
                        for points in kept.values()
                    ]
                ),
            ],
        )

    async def prices(self, symbol: str, limit: int = 1000) -> list[tuple[datetime, float]]:
        entries = await self._redis.xrevrange(self._key("prices", symbol), count=limit)
        return [(datetime.fromisoformat(f["ts"]), float(f["price"])) for _, f in reversed(entries)]

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
        check_apply(order, fill, position)
        applied = await self._apply_fill(
            keys=[
                self._key("applied_ids"),
                self._key("orders"),
                self._key("fills"),
                self._key("positions"),
                self._key("applied_offset"),
                self._key("orders", "strategy", order.strategy_id),
                self._key("fills", "strategy", order.strategy_id),
                self._key("orders", "indexed"),
                self._key("fills", "indexed"),
                self._key(CHANGES),
            ],
            args=[
                order.id,
                order.model_dump_json(),
                order.strategy_id,
                order.symbol,
                micros(order.ts),
                fill.model_dump_json(),
                micros(fill.ts),
                f"{position.strategy_id}|{position.symbol}",
                position.model_dump_json(),
                source_offset,
                self.stream_maxlen,
                "1" if expect_applied else "0",
            ],
        )
        if int(applied) < 0:
            raise ViewLostError()
        return bool(int(applied))

    async def applied_offset(self) -> int:
        value = await self._redis.get(self._key("applied_offset"))
        return -1 if value is None else int(value)

    async def orders(self, query: Query) -> Page:
        return await self._query(self._key("orders"), query)

    async def fills(self, query: Query) -> Page:
        return await self._query(self._key("fills"), query)

    async def position(self, strategy_id: str, symbol: str) -> Position | None:
        raw = await self._redis.hget(self._key("positions"), f"{strategy_id}|{symbol}")
        return None if raw is None else Position.model_validate_json(raw)

    async def positions(self, strategy_id: str | None = None) -> list[Position]:
        raw: dict[str, str] = await self._redis.hgetall(self._key("positions"))
        found = [
            Position.model_validate_json(value)
            for field, value in raw.items()
            if strategy_id is None or field.split("|", 1)[0] == strategy_id
        ]
        return sorted(found, key=lambda p: (p.strategy_id, p.symbol))

    # Signals and equity.

    async def append_signal(self, signal: Signal, maxlen: int = 5000) -> None:
        await self.append_signals([signal], maxlen)

    async def append_signals(self, signals: Sequence[Signal], maxlen: int = 5000) -> None:
        if not signals:
            return
        # Not a transaction: each script is atomic, and a reader between two sees a shorter log, not a
        # broken one; one round trip for a poll batch instead of one per signal.
        async with self._redis.pipeline(transaction=False) as pipe:
            for signal in signals:
                await self._append(
                    "signals",
                    signal.strategy_id,
                    signal.symbol,
                    signal.ts,
                    signal.model_dump_json(),
                    maxlen,
                    client=pipe,
                )
            await pipe.execute()

    async def signals(self, query: Query) -> Page:
        return await self._query(self._key("signals"), query)

    async def append_event(self, event: StrategyEvent, maxlen: int = 5000) -> None:
        await self._append(
            "events", event.strategy_id, event.symbol or "", event.ts, event.model_dump_json(), maxlen
        )

    async def _append(
        self,
        log: str,
        strategy_id: str,
        symbol: str,
        ts: datetime,
        raw: str,
        maxlen: int,
        client: Pipeline | None = None,
    ) -> None:
        """Appends to `log` and its strategy stream, trimmed to `maxlen` exactly."""
        keys = [
            self._key(log),
            self._key(log, "strategy", strategy_id),
            self._key(log, "indexed"),
            self._key(CHANGES),
        ]
        fields = ["json", raw, "strategy_id", strategy_id, "symbol", symbol, "ts", micros(ts)]
        await self._append_indexed(keys=keys, args=["=", maxlen, *fields], client=client)

    async def events(self, query: Query) -> Page:
        return await self._query(self._key("events"), query)

    async def append_bar(self, bar: ClosedBar, maxlen: int = 100_000) -> bool:
        keys = [
            self._key("bars", bar.timeframe),
            self._key("bars", "last", bar.timeframe),
            self._key(CHANGES),
        ]
        args = [bar.symbol, micros(bar.ts), bar.model_dump_json(), bar.source, maxlen]
        return bool(await self._append_bar(keys=keys, args=args))

    async def bars(self, timeframe: str, query: Query) -> Page:
        # Not indexed by strategy (the publisher): bars are read by symbol and timeframe.
        return await self._query(self._key("bars", timeframe), query, indexed=False)

    async def append_equity(self, strategy_id: str, ts: datetime, equity: float, maxlen: int = 10000) -> None:
        async with self._counted() as pipe:
            pipe.xadd(
                self._key("equity", strategy_id),
                {"equity": repr(float(equity)), "ts": ts.isoformat()},
                maxlen=maxlen,
                approximate=False,
            )

    async def equity_curve(self, strategy_id: str, limit: int = 1000) -> list[tuple[datetime, float]]:
        entries = await self._redis.xrevrange(self._key("equity", strategy_id), count=limit)
        return [(datetime.fromisoformat(f["ts"]), float(f["equity"])) for _, f in reversed(entries)]

    # Strategies.

    async def register_strategy(self, strategy_id: str, info: dict[str, Any]) -> None:
        async with self._counted() as pipe:
            pipe.hset(self._key("strategies"), strategy_id, json.dumps(info))

    async def strategies(self) -> list[dict[str, Any]]:
        raw: dict[str, str] = await self._redis.hgetall(self._key("strategies"))
        halted: set[str] = await self._redis.smembers(self._key("halted"))
        return [{"id": sid, **json.loads(raw[sid]), "halted": sid in halted} for sid in sorted(raw)]

    async def set_halted(self, strategy_id: str, halted: bool) -> None:
        async with self._counted() as pipe:
            if halted:
                pipe.sadd(self._key("halted"), strategy_id)
            else:
                pipe.srem(self._key("halted"), strategy_id)

    async def changes(self) -> int | None:
        value = await self._redis.get(self._key(CHANGES))
        return None if value is None else int(value)

    async def is_halted(self, strategy_id: str) -> bool:
        return bool(await self._redis.sismember(self._key("halted"), strategy_id))

    async def mark_delivered(self, key: str, ttl_s: int) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be >= 1")
        await self._redis.set(self._key("delivered", key), "1", ex=ttl_s)

    async def was_delivered(self, key: str) -> bool:
        return bool(await self._redis.exists(self._key("delivered", key)))

    async def clear(self) -> None:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._prefix) + ":*"
        batch: list[str] = []
        changes = self._key(CHANGES)
        async for key in self._redis.scan_iter(match=pattern, count=1000):
            if key == changes:
                continue  # kept and moved on below: a count that went back could match an answer made before
            batch.append(key)
            if len(batch) >= 500:
                await self._redis.unlink(*batch)
                batch = []
        if batch:
            await self._redis.unlink(*batch)
        await self._redis.incr(changes)

    async def close(self) -> None:
        await self._redis.aclose()

    # Queries over the logs.

    async def _query(self, key: str, query: Query, *, indexed: bool = True) -> Page:
        """A page of the log at `key`; with a strategy, of that strategy's stream when `indexed`."""
        check_query(query)
        if query.cursor is None:
            bound = "+" if query.newest_first else "-"
        else:
            # Any cursor of the pattern gets a page: Redis refuses an exclusive bound past either end of
            # the id space (and ids over 64 bits), which answered 500.
            cursor_id = parse_cursor(query.cursor)
            edge = (0, 0) if query.newest_first else (MAX_CURSOR_PART, MAX_CURSOR_PART)
            if cursor_id == edge:
                return Page(items=[], next_cursor=None)
            bound = f"({cursor_id[0]}-{cursor_id[1]}"
        # A strategy stream may still hold entries its log trimmed (it is trimmed when its strategy appends):
        # those older than the log's oldest are not read.
        oldest: tuple[int, int] | None = None
        log = key
        if indexed and query.strategy_id is not None:
            first = await self._index_log(keys=[key, f"{key}:indexed"], args=[f"{key}:strategy:"])
            if first is None:
                return Page(items=[], next_cursor=None)
            oldest = parse_cursor(first)
            if not query.newest_first and (query.cursor is None or parse_cursor(query.cursor) < oldest):
                bound = first
            key = f"{key}:strategy:{query.strategy_id}"
        since = None if query.since is None else micros(query.since)
        until = None if query.until is None else micros(query.until)
        # (stream id, json: "" from a strategy stream, read from the log once the page is known); one more than
        # `limit` tells a next page exists
        found: list[tuple[str, str]] = []
        chunk = max(min(query.limit * 4, _SCAN_CHUNK), 16)
        while len(found) <= query.limit:
            if query.newest_first:
                entries = await self._redis.xrevrange(key, max=bound, min="-", count=chunk)
            else:
                entries = await self._redis.xrange(key, min=bound, max="+", count=chunk)
            for entry_id, fields in entries:
                if oldest is not None and parse_cursor(entry_id) < oldest:
                    continue  # trimmed from the log (newest first, only older ones follow)
                ts = int(fields["ts"])
                if (
                    (query.strategy_id is None or fields["strategy_id"] == query.strategy_id)
                    and (query.symbol is None or fields["symbol"] == query.symbol)
                    and (since is None or ts >= since)
                    and (until is None or ts < until)
                ):
                    found.append((entry_id, fields.get("json", "")))
                    if len(found) > query.limit:
                        break
            if len(entries) < chunk or (
                oldest is not None and query.newest_first and parse_cursor(entries[-1][0]) < oldest
            ):
                break
            bound = f"({entries[-1][0]}"
        page = found[: query.limit]
        next_cursor = page[-1][0] if len(found) > query.limit else None
        if oldest is not None:
            page = await self._entries(log, [entry_id for entry_id, _ in page])
        return Page(items=[json.loads(raw) for _, raw in page], next_cursor=next_cursor)

    async def _entries(self, log: str, ids: list[str]) -> list[tuple[str, str]]:
        """The JSON of these entries of `log`, in one round trip; one trimmed since it was found is left out."""
        if not ids:
            return []
        answers: list[str | None] = await self._entry_json(keys=[log], args=ids)
        return [(entry_id, raw) for entry_id, raw in zip(ids, answers, strict=True) if raw is not None]
