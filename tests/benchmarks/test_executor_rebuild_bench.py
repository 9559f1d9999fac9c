"""`make bench`: the executor's start-up rebuild with 1M fills on the topic (issue 13.8), before and after.

Prints, for the rebuild before the issue (the whole `fills` topic in one list, every order id kept) and for
`ExecutorRunner.rebuild` (the `positions` topic, then the newest order ids from the tail of `fills`, streamed):
seconds, peak RSS of the process, and the RSS the rebuild added. `TRADEBOT_BENCH_FILLS` sets the count.
The `positions` topic is not compacted yet in this run (its segment has not rolled), so `new` reads one
record per fill there too: the figure is an upper bound on what a compacted topic costs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.plugins.servers import KafkaBroker
from tests.services.test_executor_rebuild import write_history
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.topics import pipeline_topics


def probe(bootstrap: str, mode: str) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.executor_rebuild_probe", bootstrap, mode],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    ).stdout.split()
    return [float(x) for x in out]


def test_executor_rebuild_with_a_million_fills(own_kafka: KafkaBroker) -> None:
    count = int(os.environ.get("TRADEBOT_BENCH_FILLS", "1000000"))
    bus = KafkaBus(own_kafka.bootstrap)
    bus.ensure_topics(pipeline_topics(1))
    started = time.monotonic()
    made = write_history(bus, count)
    bus.close()
    print(f"\n{count} fills written in {time.monotonic() - started:.0f}s ({len(made.books)} positions)")
    legacy = probe(own_kafka.bootstrap, "legacy")
    new = probe(own_kafka.bootstrap, "new")
    for name, (seconds, rss, added, books, seen) in (("before", legacy), ("after", new)):
        print(
            f"{name:>6}: rebuild {seconds:.1f}s, peak RSS {rss:.0f} MB (+{added:.0f} MB), "
            f"{books:.0f} books, {seen:.0f} order ids remembered"
        )
    assert new[3] == legacy[3]  # the same positions
    assert new[2] < legacy[2]  # less memory
