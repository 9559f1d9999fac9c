"""`make bench`: the API under load (issue 17 item 6). 50 dashboards against the `tradebot api` process over a
real Redis holding 1M fills (and their 1M orders), driven by wrk: p99 under 50 ms and no error.

Each wrk connection is one dashboard: it sends the live page's requests of one refresh (summary, trades,
events, strategies, market, bars, orders, fills, positions, P&L, marked equity, as
`tradebot.dashboard.live` asks them for the first strategy, the page's default) in turn, paced so that each
connection asks them all once per `refresh_seconds` (2 s, the dashboard's default). wrk measures each request
from sent to answered; the pacing is not part of it. Per route: the API's own latency histogram
(`tradebot_http_request_duration_seconds`), whose p99 is the bucket bound it falls under.

`TRADEBOT_BENCH_FILLS` sets the fills (1,000,000), `TRADEBOT_BENCH_SECONDS` wrk's duration (30),
`TRADEBOT_BENCH_CLIENTS` the connections (50);
`TRADEBOT_BENCH_REDIS_URL` a Redis to load once and reuse. The machine runs other work: the figures are upper bounds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis

from tests.plugins._proc import ServerProcess, free_port, http_ok
from tradebot.adapters.redis_store import _APPLY_FILL, CHANGES, micros
from tradebot.core.costs import Costs
from tradebot.core.models import Fill, FillStatus, OrderReason, OrderRequest, Position, Side, order_id
from tradebot.core.params import StrategyParams
from tradebot.dashboard.candles import BARS_LOADED
from tradebot.dashboard.live import EVENT_ROWS, MARKER_ORDERS, PRICE_POINTS, TABLE_ROWS

T0 = datetime(2024, 3, 1, tzinfo=UTC)
STRATEGIES = {f"s{n}": [f"S{n}A", f"S{n}B"] for n in range(1, 6)}
TIMEFRAME = "1m"
PREFIX = "load"
P99_TARGET_MS = 50.0
REFRESH_SECONDS = 2.0
BATCH = 2000


def _templates() -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    """One order, fill and position as the executor writes them: each row of the history is a copy with its own
    ids, prices and times (pydantic a million times over would take minutes)."""
    order = OrderRequest(
        id="x",
        strategy_id="s",
        symbol="X",
        side=Side.BUY,
        qty=1.0,
        reason=OrderReason.ENTRY_LONG,
        ref_price=100.0,
        ts=T0,
        cause="c",
    )
    fill = Fill(
        order_id="x",
        strategy_id="s",
        symbol="X",
        side=Side.BUY,
        qty=1.0,
        price=100.0,
        commission=0.1,
        status=FillStatus.FILLED,
        reason=OrderReason.ENTRY_LONG,
        ts=T0,
    )
    position = Position(strategy_id="s", symbol="X", qty=0.0, avg_price=0.0, ts=T0)
    return order.model_dump(mode="json"), fill.model_dump(mode="json"), position.model_dump(mode="json")


def fill_redis(url: str, count: int) -> None:
    """`count` fills (half entries, half exits, each with its order) over the strategies and their symbols,
    applied by the store's own script (its strategy streams and marks included), plus what the page reads
    besides: 5,000 prices and 1,000 closed bars a symbol, the last prices, the strategies."""
    client = redis.Redis.from_url(url, decode_responses=True)
    apply = client.register_script(_APPLY_FILL)
    order_t, fill_t, position_t = _templates()
    pairs = [(sid, symbol) for sid, symbols in STRATEGIES.items() for symbol in symbols]
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        sid, symbol = pairs[i % len(pairs)]
        cycle = i // len(pairs)
        entry = cycle % 2 == 0
        ts = T0 + timedelta(seconds=cycle)
        price = 100.0 + (cycle % 50) * 0.5
        side, reason = ("buy", "entry_long") if entry else ("sell", "exit_cross")
        oid = order_id(sid, symbol, f"tick:{symbol}:{cycle}")
        order = {**order_t, "id": oid, "strategy_id": sid, "symbol": symbol, "side": side, "qty": 1.0}
        order |= {
            "reason": reason,
            "ref_price": price,
            "ts": ts.isoformat(),
            "cause": f"tick:{symbol}:{cycle}",
        }
        fill = {**fill_t, "order_id": oid, "strategy_id": sid, "symbol": symbol, "side": side, "qty": 1.0}
        fill |= {"price": price, "commission": price * 0.001, "reason": reason, "ts": ts.isoformat()}
        position = {**position_t, "strategy_id": sid, "symbol": symbol, "qty": 1.0 if entry else 0.0}
        position |= {"avg_price": price if entry else 0.0, "last_price": price, "ts": ts.isoformat()}
        apply(
            keys=[
                f"{PREFIX}:applied_ids",
                f"{PREFIX}:orders",
                f"{PREFIX}:fills",
                f"{PREFIX}:positions",
                f"{PREFIX}:applied_offset",
                f"{PREFIX}:orders:strategy:{sid}",
                f"{PREFIX}:fills:strategy:{sid}",
                f"{PREFIX}:orders:indexed",
                f"{PREFIX}:fills:indexed",
                f"{PREFIX}:{CHANGES}",
            ],
            args=[
                oid,
                json.dumps(order),
                sid,
                symbol,
                micros(ts),
                json.dumps(fill),
                micros(ts),
                f"{sid}|{symbol}",
                json.dumps(position),
                i,
                count,
                "0",
            ],
            client=pipe,
        )
        if i % BATCH == BATCH - 1:
            pipe.execute()
    pipe.execute()
    end = T0 + timedelta(seconds=count // len(pairs))
    params = StrategyParams(timeframe=TIMEFRAME).model_dump(mode="json")
    for sid, symbols in STRATEGIES.items():
        info = {
            "symbols": symbols,
            "params": params,
            "costs": Costs(commission_pct=0.1).model_dump(mode="json"),
        }
        client.hset(f"{PREFIX}:strategies", sid, json.dumps({**info, "initial_cash": 100_000.0}))
        for symbol in symbols:
            client.hset(f"{PREFIX}:price:last", symbol, json.dumps([101.0, end.isoformat()]))
            for n in range(5000):
                at = end - timedelta(seconds=5000 - n)
                pipe.xadd(f"{PREFIX}:prices:{symbol}", {"price": repr(100.0 + n % 7), "ts": at.isoformat()})
            for n in range(BARS_LOADED):
                opened = end - timedelta(minutes=BARS_LOADED - n)
                bar = {"symbol": symbol, "timeframe": TIMEFRAME, "ts": opened.isoformat(), "open": 100.0}
                bar |= {"high": 101.0, "low": 99.0, "close": 100.5, "volume": 10.0, "source": sid}
                pipe.xadd(
                    f"{PREFIX}:bars:{TIMEFRAME}",
                    {"json": json.dumps(bar), "strategy_id": sid, "symbol": symbol, "ts": micros(opened)},
                )
            pipe.execute()
    client.incr(f"{PREFIX}:{CHANGES}")  # the writes above, as the store's own writers count theirs
    client.close()


def dashboard_requests(strategy: str) -> list[str]:
    """One refresh of the live page for `strategy` (tradebot.dashboard.live, panel by panel)."""
    symbols = STRATEGIES[strategy]
    market = urlencode(
        [
            *(("symbol", s) for s in symbols),
            ("strategy", strategy),
            ("points", PRICE_POINTS),
            ("limit", MARKER_ORDERS),
        ]
    )
    log = urlencode({"strategy": strategy, "limit": TABLE_ROWS, "order": "desc"})
    return [
        "/summary",
        f"/trades?strategy={strategy}&limit={TABLE_ROWS}",
        f"/events?strategy={strategy}&limit={EVENT_ROWS}",
        "/strategies",
        f"/market?{market}",
        *(f"/bars?symbol={s}&timeframe={TIMEFRAME}&limit={BARS_LOADED}&order=desc" for s in symbols),
        f"/orders?{log}",
        f"/fills?{log}",
        f"/positions?strategy={strategy}",
        "/pnl",
        f"/equity/marked?strategy={strategy}",
    ]


def wrk_script(paths: list[str], refresh_s: float) -> str:
    """wrk's Lua: the paths in turn; each connection waits so that it asks all of them once a refresh (about:
    the wait is spread over the requests, with jitter so the connections do not march in step)."""
    listed = ", ".join(json.dumps(p) for p in paths)
    gap_ms = refresh_s * 1000 / len(paths)
    return f"""
local paths = {{{listed}}}
local next_path = 0
math.randomseed(os.time())
request = function()
    next_path = next_path % #paths + 1
    return wrk.format("GET", paths[next_path])
end
delay = function()
    return math.floor({gap_ms} * (0.5 + math.random()))
end
"""


@dataclass
class WrkResult:
    requests: int
    rate: float
    percentiles_ms: dict[str, float]
    non_2xx: int
    socket_errors: str | None
    output: str


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(url: str, script: Path, clients: int, seconds: int) -> WrkResult:
    wrk = shutil.which("wrk")
    assert wrk is not None, "wrk is missing: `make bench` installs it (.ci/tools/bench.sh)"
    argv = [
        wrk,
        "-t2",
        f"-c{clients}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    percentiles = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.MULTILINE)}
    total = re.search(r"^\s+(\d+) requests in", out, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    assert total is not None, out
    assert rate is not None, out
    return WrkResult(
        requests=int(total.group(1)),
        rate=float(rate.group(1)),
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=errors.group(1) if errors else None,
        output=out,
    )


def _buckets(metrics: str) -> dict[tuple[str, float], float]:
    """(route, bucket bound) -> requests answered within it, of the GET routes."""
    found = {}
    for line in metrics.splitlines():
        if line.startswith("tradebot_http_request_duration_seconds_bucket{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("method") == "GET":
                bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
                found[(labels["route"], bound)] = float(line.rsplit(" ", 1)[1])
    return found


def route_p99_ms(before: str, after: str) -> dict[str, tuple[int, float]]:
    """Per route, from the API's latency histogram between two scrapes: requests answered, and the bucket
    bound its p99 falls under (server-side: from the request read to the answer sent)."""
    start, end = _buckets(before), _buckets(after)
    by_route: dict[str, list[tuple[float, float]]] = {}
    for (route, bound), seen in end.items():
        by_route.setdefault(route, []).append((bound, seen - start.get((route, bound), 0.0)))
    result = {}
    for route, counts in by_route.items():
        counts.sort()
        total = counts[-1][1]
        if total > 0:
            p99 = next(bound for bound, seen in counts if seen >= 0.99 * total)
            result[route] = (int(total), p99 * 1000)
    return result


@pytest.fixture
def loaded_redis(request: pytest.FixtureRequest) -> str:
    """A Redis holding the history: `TRADEBOT_BENCH_REDIS_URL`'s if it holds it already (loading takes minutes
    on a busy machine; compare two versions of the API on one load), else the session's, loaded here."""
    count = int(os.environ.get("TRADEBOT_BENCH_FILLS", "1000000"))
    url = os.environ.get("TRADEBOT_BENCH_REDIS_URL") or request.getfixturevalue("redis_server").url
    client = redis.Redis.from_url(url, decode_responses=True)
    if int(client.get(f"{PREFIX}:applied_offset") or -1) != count - 1:  # type: ignore[arg-type]
        client.flushdb()
        started = time.monotonic()
        fill_redis(url, count)
        memory: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
        used = int(memory["used_memory"]) / 2**20
        print(f"\n{count} fills (and orders) in Redis in {time.monotonic() - started:.0f}s, {used:.0f} MB")
    client.close()
    return url


def test_dashboard_load_on_a_million_fills(loaded_redis: str, tmp_path: Path) -> None:
    clients = int(os.environ.get("TRADEBOT_BENCH_CLIENTS", "50"))
    seconds = int(os.environ.get("TRADEBOT_BENCH_SECONDS", "30"))
    port = free_port()
    env = {
        **os.environ,
        "TRADEBOT_REDIS_URL": loaded_redis,
        "TRADEBOT_REDIS_PREFIX": PREFIX,
        "TRADEBOT_REDIS_STREAM_MAXLEN": os.environ.get("TRADEBOT_BENCH_FILLS", "1000000"),
        # Reads only: no Kafka (the API creates its producer lazily and reads never wait for it).
        "TRADEBOT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "TRADEBOT_HTTP_HOST": "127.0.0.1",
        "TRADEBOT_HTTP_PORT": str(port),
        "TRADEBOT_LOG_LEVEL": "WARNING",
    }
    api = ServerProcess("api", [sys.executable, "-m", "tradebot.cli", "api"], tmp_path, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        api.wait_until("/readyz", lambda: http_ok(f"{url}/readyz"), 60)
        paths = dashboard_requests("s1")
        sizes: dict[str, int] = {}
        for path in paths:  # every request of the mix answers, before any is timed
            answered = httpx.get(f"{url}{path}", timeout=120)
            assert answered.status_code == 200, path
            route = path.split("?")[0]
            sizes[route] = sizes.get(route, 0) + len(answered.content)
        script = tmp_path / "dashboard.lua"
        script.write_text(wrk_script(paths, REFRESH_SECONDS))
        before = httpx.get(f"{url}/metrics", timeout=30).text
        result = run_wrk(url, script, clients, seconds)
        after = httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        api.stop()
    print(
        f"\n{clients} dashboards, each refreshing every {REFRESH_SECONDS:g} s ({len(paths)} requests), {seconds} s:"
    )
    print(result.output)
    pct = result.percentiles_ms
    print(
        f"mix: {result.requests} requests, {result.rate:.0f}/s, p50 {pct['50']:.1f} ms, p90 {pct['90']:.1f} ms, "
        f"p99 {pct['99']:.1f} ms (target < {P99_TARGET_MS:g} ms), non-2xx {result.non_2xx}, "
        f"socket errors {result.socket_errors or 'none'}"
    )
    for route, (count, p99) in sorted(route_p99_ms(before, after).items()):
        size = f", {sizes[route] / 1024:,.0f} KiB a refresh" if route in sizes else ""
        print(f"  {route:<16} {count:>7} answered, server-side p99 <= {p99:g} ms{size}")
    assert result.non_2xx == 0
    assert result.socket_errors is None, result.socket_errors
    assert pct["99"] < P99_TARGET_MS
