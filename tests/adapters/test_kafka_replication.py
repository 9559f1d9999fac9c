"""How many replicas the topics the services create get, and the readiness check over several brokers.

The three-broker side (three replicas, `min.insync.replicas` 2, and a broker lost mid-trade) is in
`tests/e2e/test_broker_loss.py`; here: the rule, one broker, explicit settings and their refusals.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]
from pydantic import ValidationError

from tests.plugins._proc import free_port
from tests.plugins.servers import KafkaBroker
from tradebot.adapters.bus import BusError, TopicSpec
from tradebot.adapters.connect import PipelineSettings, kafka_reachable
from tradebot.adapters.kafka import KafkaBus, replication_for


@pytest.mark.parametrize(
    ("brokers", "given", "expected"),
    [
        (1, (None, None), (1, 1)),
        (2, (None, None), (2, 1)),
        (3, (None, None), (3, 2)),
        (5, (None, None), (3, 2)),
        (5, (5, None), (5, 2)),
        (5, (None, 3), (3, 3)),
        (1, (3, 2), (3, 2)),  # explicit settings win over the count (Kafka refuses them if it cannot)
    ],
)
def test_replication_follows_the_cluster_size_unless_given(
    brokers: int, given: tuple[int | None, int | None], expected: tuple[int, int]
) -> None:
    assert replication_for(brokers, *given) == expected


def test_more_in_sync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(BusError, match=r"min.insync.replicas 3 is more than the replication factor 2"):
        replication_for(3, 2, 3)
    with pytest.raises(ValidationError, match="TRADEBOT_KAFKA_MIN_INSYNC_REPLICAS"):
        PipelineSettings(kafka_replication_factor=2, kafka_min_insync_replicas=3)


def topic_replication(bootstrap: str, name: str) -> tuple[int, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(name, timeout=30).topics[name].partitions.values()
    (replicas,) = {len(partition.replicas) for partition in partitions}
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    return replicas, str(config["min.insync.replicas"].value)


def test_one_broker_gives_one_replica(kafka: KafkaBroker) -> None:
    name = f"replication-{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(kafka.bootstrap)
    try:
        bus.ensure_topics([TopicSpec(name, partitions=2)])
    finally:
        bus.close()
    assert topic_replication(kafka.bootstrap, name) == (1, "1")


def test_more_replicas_than_brokers_fails_naming_kafkas_error(kafka: KafkaBroker) -> None:
    bus = KafkaBus(kafka.bootstrap, replication_factor=3)
    try:
        with pytest.raises(BusError, match="INVALID_REPLICATION_FACTOR"):
            bus.ensure_topics([TopicSpec(f"replication-{uuid.uuid4().hex[:10]}")])
    finally:
        bus.close()


async def test_ready_while_any_bootstrap_server_answers(kafka: KafkaBroker) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: a broker that is down
    live_second = kafka_reachable(PipelineSettings(kafka_bootstrap=f"{closed},{kafka.bootstrap}"))
    assert await live_second() is True
    all_down = kafka_reachable(PipelineSettings(kafka_bootstrap=f"{closed},127.0.0.1:{free_port()}"))
    with pytest.raises(OSError):
        await all_down()
