"""The fixture broker is a real Kafka: plain and transactional produce/consume, and kcat agrees."""

from __future__ import annotations

import subprocess
import uuid

from confluent_kafka import Consumer, KafkaError, Producer

from tests.plugins._proc import require_tool
from tests.plugins.servers import KafkaBroker


def _consume_all(
    bootstrap: str, topic: str, *, isolation: str, expected: int, timeout_s: float = 30
) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    import time

    deadline = time.monotonic() + timeout_s
    eof = False
    try:
        while time.monotonic() < deadline and not (eof and len(values) >= expected):
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    eof = True
                    continue
                raise AssertionError(f"consumer error: {error}")
            value = message.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    return values


def test_produce_and_consume_round_trip(kafka: KafkaBroker) -> None:
    topic = kafka.unique_topic("roundtrip", partitions=3)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    sent = [f"tick-{i}".encode() for i in range(100)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=f"SYM{i % 5}".encode(), value=value)
    assert producer.flush(30) == 0

    received = _consume_all(kafka.bootstrap, topic, isolation="read_uncommitted", expected=len(sent))
    assert sorted(received) == sorted(sent)


def test_aborted_transaction_stays_invisible_to_read_committed(kafka: KafkaBroker) -> None:
    topic = kafka.unique_topic("txn")
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"txn-{uuid.uuid4().hex}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    producer.produce(topic, value=b"committed-1")
    producer.produce(topic, value=b"committed-2")
    producer.commit_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, value=b"committed-3")
    producer.commit_transaction(30)

    committed = _consume_all(kafka.bootstrap, topic, isolation="read_committed", expected=3)
    assert committed == [b"committed-1", b"committed-2", b"committed-3"]
    # The aborted record really reached the log: an uncommitted reader sees it.
    everything = _consume_all(kafka.bootstrap, topic, isolation="read_uncommitted", expected=4)
    assert b"aborted" in everything


def test_kcat_reads_what_confluent_kafka_wrote(kafka: KafkaBroker) -> None:
    kcat = require_tool("kcat")
    topic = kafka.unique_topic("kcat")
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(10):
        producer.produce(topic, key=b"AAPL", value=f'{{"seq": {i}}}'.encode())
    assert producer.flush(30) == 0

    result = subprocess.run(
        [
            str(kcat),
            "-b",
            kafka.bootstrap,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k=%s\\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f'AAPL={{"seq": {i}}}' for i in range(10)]


def test_broker_metadata_lists_the_created_topic(kafka: KafkaBroker) -> None:
    from confluent_kafka.admin import AdminClient

    topic = kafka.unique_topic("meta", partitions=4)
    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 4
    assert [broker.id for broker in metadata.brokers.values()] == [1]


def test_kafka_cli_tools_work_against_the_fixture_broker(kafka: KafkaBroker) -> None:
    """The Kafka CLI classes from .tools/bin stay usable for debugging a test broker."""
    topic = kafka.unique_topic("cli", partitions=2)
    result = subprocess.run(
        [
            str(require_tool("kafka-topics")),
            "--bootstrap-server",
            kafka.bootstrap,
            "--describe",
            "--topic",
            topic,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"Topic: {topic}" in result.stdout
    assert "PartitionCount: 2" in result.stdout
