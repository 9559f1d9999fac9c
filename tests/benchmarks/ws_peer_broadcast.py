"""The peer of the simulator benchmark: the websockets library's own idiom for a market broadcast.

`python ws_peer_broadcast.py PORT SYMBOLS INTERVAL_S`: the simulator's random-walk schedule (a round of one
tick per symbol every INTERVAL_S, late rounds made up), but each tick encoded with `json.dumps` and sent
with `websockets.broadcast()`, which frames and writes it once per client. Run as a script.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime

import numpy as np
from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(connection: ServerConnection) -> None:
    await connection.recv()  # the subscription
    await connection.send(json.dumps({"type": "subscribed", "symbols": "*", "mode": "gbm"}))
    CLIENTS.add(connection)
    try:
        await connection.wait_closed()
    finally:
        CLIENTS.discard(connection)


async def main(port: int, n_symbols: int, interval_s: float) -> None:
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    rng = np.random.default_rng(0)
    prices = np.full(n_symbols, 100.0)
    seqs = [0] * n_symbols
    async with serve(handler, "127.0.0.1", port):
        started, rounds = time.monotonic(), 0
        while True:
            due = int((time.monotonic() - started) / interval_s) + 1 - rounds
            most = max(1, 5_000 // n_symbols)  # as the simulator: skip rounds rather than stall the loop
            if due > most:
                rounds, due = rounds + due - most, most
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            for _ in range(max(due, 0)):
                prices = prices * np.exp(rng.normal(0, 1e-4, n_symbols))
                for i, symbol in enumerate(symbols):
                    seqs[i] += 1
                    message = {"type": "tick", "symbol": symbol, "price": round(float(prices[i]), 4)}
                    message |= {"size": 1.0, "ts": now, "seq": seqs[i]}
                    broadcast(CLIENTS, json.dumps(message))
            rounds += max(due, 0)
            await asyncio.sleep(max(0.0, started + rounds * interval_s - time.monotonic()))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
