"""The simulator over real WebSocket connections: every client gets every tick of a broadcast, once,
in order, one tick per frame; filtered subscriptions; slow clients are closed; replays send ticks."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.plugins._proc import free_port
from tradebot.simulator import server as simulator_server
from tradebot.simulator.server import (
    GbmConfig,
    Metrics,
    PriceSimulator,
    ReplayConfig,
    start_server,
    text_frame,
)

SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]


def test_text_frames_use_the_three_length_encodings() -> None:
    assert text_frame(b"x" * 125)[:2] == bytes((0x81, 125))
    assert text_frame(b"x" * 126)[:4] == bytes((0x81, 126, 0, 126))
    big = text_frame(b"x" * 70_000)
    assert big[:2] == bytes((0x81, 127))
    assert int.from_bytes(big[2:10], "big") == 70_000
    assert len(big) == 10 + 70_000


async def subscribe(port: int, symbols: list[str] | str = "*", max_queue: int = 16) -> ClientConnection:
    client = await connect(f"ws://127.0.0.1:{port}", max_queue=max_queue)
    await client.send(json.dumps({"op": "subscribe", "symbols": symbols}))
    answer = json.loads(await client.recv())
    assert answer["type"] == "subscribed"
    return client


async def collect(client: ClientConnection, count: int) -> list[dict[str, Any]]:
    ticks: list[dict[str, Any]] = []
    while len(ticks) < count:
        message = json.loads(await client.recv())
        assert message["type"] == "tick"  # one tick per frame
        ticks.append(message)
    return ticks


async def test_every_client_gets_every_tick_once_in_order() -> None:
    # 1 ms rounds: shorter than most event loop wake-ups, so rounds are made up several at a time.
    simulator = PriceSimulator(
        GbmConfig(symbols=SYMBOLS, interval_s=0.001, seed=4), Metrics(CollectorRegistry())
    )
    port = free_port()
    server = await start_server(simulator, "127.0.0.1", port)
    stop = asyncio.Event()
    clients = [await subscribe(port) for _ in range(3)]
    only_b = await subscribe(port, ["BBB"])
    walks = asyncio.create_task(simulator.broadcast_walks(stop))
    try:
        streams = await asyncio.gather(*(collect(client, 2_000) for client in clients))
        filtered = await collect(only_b, 300)
    finally:
        stop.set()
        await walks
        for client in [*clients, only_b]:
            await client.close()
        server.close()
        await server.wait_closed()

    for ticks in streams:
        by_symbol: dict[str, list[int]] = defaultdict(list)
        for tick in ticks:
            by_symbol[str(tick["symbol"])].append(int(tick["seq"]))
        first = {symbol: seqs[0] for symbol, seqs in by_symbol.items()}
        for symbol, seqs in by_symbol.items():
            assert seqs == list(range(first[symbol], first[symbol] + len(seqs))), symbol  # no gap, no repeat
    # Clients that subscribed at the same time see the same prices for the same (symbol, seq).
    prices = [{(t["symbol"], t["seq"]): t["price"] for t in ticks} for ticks in streams]
    common = set(prices[0]) & set(prices[1]) & set(prices[2])
    assert len(common) > 1_000
    assert all(prices[0][key] == prices[1][key] == prices[2][key] for key in common)
    assert {t["symbol"] for t in filtered} == {"BBB"}
    assert [t["seq"] for t in filtered] == list(range(int(filtered[0]["seq"]), int(filtered[0]["seq"]) + 300))
    assert simulator.metrics.ticks._value.get() >= 3 * 2_000 + 300


async def read_until_closed(client: ClientConnection) -> None:
    while True:
        await client.recv()


async def test_a_client_that_does_not_read_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulator_server, "MAX_QUEUED_BYTES", 64 * 1024)
    simulator = PriceSimulator(
        GbmConfig(symbols=[f"S{i}" for i in range(50)], interval_s=0.001), Metrics(CollectorRegistry())
    )
    port = free_port()
    server = await start_server(simulator, "127.0.0.1", port)
    stop = asyncio.Event()
    # The client library stops reading the socket once it holds max_queue unread messages.
    stalled = await subscribe(port, max_queue=1)
    healthy = await subscribe(port)
    walks = asyncio.create_task(simulator.broadcast_walks(stop))
    try:
        for _ in range(400):
            if len(simulator._subscribers) == 1:
                break
            await asyncio.sleep(0.05)
            await collect(healthy, 500)  # the reading client keeps up meanwhile
        assert len(simulator._subscribers) == 1
        with pytest.raises(ConnectionClosed) as info:
            await read_until_closed(stalled)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008
        assert len(await collect(healthy, 100)) == 100  # the other client is still served
    finally:
        stop.set()
        await walks
        await healthy.close()
        server.close()
        await server.wait_closed()


async def test_replay_of_a_tick_file_sends_prices_sizes_and_the_end(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    rows = [f"2024-01-02T15:00:{i // 2:02d}.{(i % 2) * 5}00Z,{100 + i / 4},{i + 1}" for i in range(1_200)]
    path.write_text("timestamp,price,size\n" + "\n".join(rows[:120]) + "\n")
    simulator = PriceSimulator(ReplayConfig(path, "SYM", speed=None), Metrics(CollectorRegistry()))
    port = free_port()
    server = await start_server(simulator, "127.0.0.1", port)
    try:
        client = await connect(f"ws://127.0.0.1:{port}")
        await client.send(json.dumps({"op": "subscribe", "symbols": "*", "from_seq": 20}))
        assert json.loads(await client.recv())["type"] == "subscribed"
        ticks = await collect(client, 100)
        assert json.loads(await client.recv()) == {"type": "end"}
        await client.close()
    finally:
        server.close()
        await server.wait_closed()
    assert [t["seq"] for t in ticks] == list(range(21, 121))
    assert ticks[0]["price"] == 100 + 20 / 4
    assert ticks[0]["size"] == 21.0
    assert ticks[0]["ts"] == "2024-01-02T15:00:10.000000Z"
    assert ticks[1]["ts"] == "2024-01-02T15:00:10.500000Z"
