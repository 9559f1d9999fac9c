"""One executor rebuild in a process of its own, so its peak RSS is the rebuild's: `python -m
tests.benchmarks.executor_rebuild_probe BOOTSTRAP new|legacy` prints `seconds rss_mb books seen`.

`legacy` is the rebuild before issue 13.8 (the whole `fills` topic into one list, replayed, every order id
kept); `new` is `ExecutorRunner.rebuild` (positions, then a bounded tail of `fills`, streamed)."""

from __future__ import annotations

import sys
import time

from prometheus_client import CollectorRegistry

from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.topics import FILLS, FillRecord
from tradebot.core.costs import Costs
from tradebot.executor.broker import PaperBroker
from tradebot.executor.runner import ExecutorMetrics, ExecutorRunner


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries it over exec from the parent, and make
    bench's pytest process holds gigabytes of earlier benchmarks' bars (every probe read 2.8 GB, +0 MB)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def main(bootstrap: str, mode: str) -> None:
    bus = KafkaBus(bootstrap)
    broker = PaperBroker(Costs(commission_pct=0.1))
    base = peak_rss_kib()
    started = time.monotonic()
    if mode == "legacy":
        seen: set[str] = set()
        records = bus.read_all(FILLS, read_committed=True, timeout=600.0)
        for record in records:
            fill_record = FillRecord.model_validate_json(record.value)
            seen.add(fill_record.order.id)
            broker.replay(fill_record)
        remembered = len(seen)
    else:
        runner = ExecutorRunner(
            bus=bus, store=MemoryStore(), broker=broker, metrics=ExecutorMetrics(CollectorRegistry())
        )
        runner.rebuild()
        remembered = len(broker.seen)
    took = time.monotonic() - started
    peak = peak_rss_kib()
    print(f"{took:.2f} {peak / 1024:.0f} {(peak - base) / 1024:.0f} {len(broker.books)} {remembered}")
    bus.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
