"""End-to-end fixtures: each test gets its own Kafka broker and Redis (they restart and kill them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Pipeline
from tests.plugins.servers import KafkaBroker, RedisServer


@pytest.fixture
def pipeline(
    own_kafka: KafkaBroker, own_redis: RedisServer, tmp_path: Path
) -> Iterator[Pipeline[KafkaBroker]]:
    logs = tmp_path / "service-logs"
    logs.mkdir()
    running = Pipeline(own_kafka, own_redis, logs)
    try:
        yield running
    finally:
        running.stop_all()
