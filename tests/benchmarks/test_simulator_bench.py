"""`make bench`: ticks per second the simulator sends to one client and to five at once, beside the
websockets library's own broadcast idiom (`broadcast()` per tick) on the same schedule, in the same call.

Each server runs in its own process with 100 symbols and a round every 2 ms (a 50,000 ticks/s schedule)
or every 0.5 ms (200,000, beyond what it can do: its ceiling). Each client is its own process
(`ws_counter.py`) that decodes every tick and checks the sequence numbers. Target (issue 17 item 4):
at least 50,000 ticks/s to each of one and of five clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.plugins._proc import ServerProcess, free_port, port_open

HERE = Path(__file__).resolve().parent
SYMBOLS = [f"S{i:03d}" for i in range(100)]
SECONDS = 8.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run_clients(port: int, n: int) -> list[dict[str, float]]:
    clients = [
        subprocess.Popen(
            [sys.executable, str(HERE / "ws_counter.py"), str(port), str(SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    results = []
    for client in clients:
        out, _ = client.communicate(timeout=SECONDS + 60)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def measure(kind: str, per_second: int, n_clients: int, logs: Path) -> tuple[float, int, float]:
    """(slowest client's ticks/s, gaps, server CPU seconds per 1,000 ticks sent)."""
    port = free_port()
    interval = len(SYMBOLS) / per_second
    if kind == "tradebot":
        env = {
            **os.environ,
            "TRADEBOT_SYMBOLS": ",".join(SYMBOLS),
            "TRADEBOT_SIMULATOR_INTERVAL_S": str(interval),
            "TRADEBOT_HTTP_PORT": str(free_port()),
            "TRADEBOT_LOG_LEVEL": "WARNING",
        }
        argv = [str(Path(sys.executable).parent / "tradebot"), "simulator", "--port", str(port)]
    else:
        env = dict(os.environ)
        argv = [
            sys.executable,
            str(HERE / "ws_peer_broadcast.py"),
            str(port),
            str(len(SYMBOLS)),
            str(interval),
        ]
    server = ServerProcess(f"{kind}-{per_second}-{n_clients}", argv, logs, env=env)
    try:
        server.wait_until("port", lambda: port_open(port), timeout=60)
        cpu_before = cpu_seconds(server.popen.pid)
        results = run_clients(port, n_clients)
        cpu = cpu_seconds(server.popen.pid) - cpu_before
    finally:
        server.stop()
    sent = sum(r["ticks"] for r in results)
    return min(r["rate"] for r in results), int(sum(r["gaps"] for r in results)), cpu / max(sent, 1) * 1000


def test_simulator_ticks_per_second(tmp_path: Path) -> None:
    lines = [f"\n== simulator: ticks/s received by each client (slowest of them), {len(SYMBOLS)} symbols =="]
    figures: dict[tuple[str, int, int], float] = {}
    started = time.monotonic()
    for per_second in (50_000, 200_000):
        for n_clients in (1, 5):
            for kind in ("tradebot", "websockets-broadcast"):
                rate, gaps, cpu_per_k = measure(kind, per_second, n_clients, tmp_path)
                figures[(kind, per_second, n_clients)] = rate
                lines.append(
                    f"{kind:21s} schedule {per_second:7,}/s  {n_clients} client(s): {rate:9,.0f} ticks/s each, "
                    f"{gaps} gaps, server CPU {cpu_per_k * 1000:6.1f} us/tick sent"
                )
            ours, peer = (
                figures[("tradebot", per_second, n_clients)],
                figures[("websockets-broadcast", per_second, n_clients)],
            )
            ratio = f"{ours / peer:4.1f}x" if peer else "more than (it sent nothing)"
            lines.append(f"{'':21s} -> tradebot sends {ratio} the broadcast idiom")
    lines.append(f"(measured in {time.monotonic() - started:.0f} s)")
    print("\n".join(lines))
    for n_clients in (1, 5):
        assert figures[("tradebot", 200_000, n_clients)] >= 50_000, lines
