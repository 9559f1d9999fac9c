"""GET /signals shows the moving-average crosses the strategy emits: the executor projects `signals` to Redis."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.e2e.harness import Pipeline, read_topic
from tests.plugins.servers import KafkaBroker

# Short windows cross often (about 265 times over the sample), more than the retention below.
PARAMS = {"short_window": 3, "long_window": 8}
RETENTION = 100


def signals_shown(pipeline: Pipeline[KafkaBroker]) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{pipeline.api_port}/signals?strategy_id=parity&limit=1000"
    with urllib.request.urlopen(url, timeout=5) as response:
        items: list[dict[str, Any]] = json.loads(response.read())["items"]
        return items


def test_the_newest_emitted_signals_appear_on_get_signals(pipeline: Pipeline[KafkaBroker]) -> None:
    pipeline.start_replay(params=PARAMS, with_api=True, TRADEBOT_REDIS_STREAM_MAXLEN=str(RETENTION))
    pipeline.wait_http("api")
    pipeline.wait_until("the replay", lambda: len(read_topic(pipeline.kafka.bootstrap, "ticks")) == 2148, 120)

    def emitted() -> list[dict[str, Any]]:
        # One symbol, so one partition: the topic's order is the order of emission.
        return [s for s in read_topic(pipeline.kafka.bootstrap, "signals") if s["strategy_id"] == "parity"]

    def newest_shown() -> bool:
        on_topic = emitted()
        return len(on_topic) > RETENTION and signals_shown(pipeline) == on_topic[::-1][:RETENTION]

    # Newest first, exactly the newest RETENTION of what the strategy emitted: bounded, none lost or repeated.
    pipeline.wait_until("the newest signals on GET /signals", newest_shown, 90)
    assert {s["direction"] for s in signals_shown(pipeline)} == {"up", "down"}
