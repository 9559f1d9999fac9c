"""The bus contract, run against KafkaBus (a real broker) and MemoryBus alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException

from tests.plugins.servers import KafkaBroker
from tradebot.adapters.bus import (
    Bus,
    BusError,
    ConsumedOffsets,
    Consumer,
    FencedError,
    Producer,
    Record,
    TopicSpec,
    TransactionalProducer,
)
from tradebot.adapters.kafka import KafkaBus, _bus_error
from tradebot.adapters.memory_bus import MemoryBus, MemoryConsumer, murmur2, partition_for

Names = Callable[[str], str]


def drain(consumer: Consumer, expected: int, timeout: float = 20.0, max_records: int = 500) -> list[Record]:
    """Polls until `expected` records arrived (or fails after `timeout`)."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < expected:
        assert time.monotonic() < deadline, f"got {len(records)} of {expected} records in {timeout}s"
        records.extend(consumer.poll(0.2, max_records=max_records))
    return records


def poll_batch(consumer: Consumer, max_records: int, timeout: float = 20.0) -> list[Record]:
    """The first non-empty poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = consumer.poll(0.2, max_records=max_records)
        if records:
            return records
    raise AssertionError(f"nothing to poll in {timeout}s")


def wait_assigned(consumer: Consumer, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not consumer.assignment():
        assert time.monotonic() < deadline, "no partitions assigned"
        consumer.poll(0.1)


def produce_and_flush(producer: Producer, topic: str, value: bytes, partition: int) -> None:
    """Kafka may refuse the record at once or fail its delivery; MemoryBus refuses it at once."""
    producer.produce(topic, value, partition=partition)
    producer.flush(10)


def fenced_operation(producer: TransactionalProducer, topic: str) -> None:
    """librdkafka notices the fencing on its next request to the broker: at the latest on commit."""
    producer.produce(topic, b"zombie-2")
    producer.commit()


def values(records: list[Record]) -> list[bytes]:
    return [record.value for record in records]


def test_murmur2_matches_kafka_utils_test_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    cases: dict[bytes, int] = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, expected in cases.items():
        assert murmur2(data) == expected, data


def test_partition_for_matches_librdkafka_murmur2() -> None:
    for i in range(500):
        key = f"key-{i}".encode() * (i % 5 + 1)
        for partitions in (1, 3, 7, 12):
            assert partition_for(key, partitions) == confluent_kafka.murmur2(key, partitions)


def test_round_trip_keeps_per_key_order(bus: Bus, names: Names) -> None:
    topic = names("roundtrip")
    bus.ensure_topics([TopicSpec(topic, partitions=3)])
    producer = bus.producer("roundtrip")
    keys = [f"SYM{k}".encode() for k in range(6)]
    for i in range(60):
        key = keys[i % len(keys)]
        producer.produce(topic, f"{key.decode()}:{i}".encode(), key=key)
    producer.flush()
    consumer = bus.consumer(names("group"), [topic])
    try:
        records = drain(consumer, 60)
    finally:
        consumer.close()
    producer.close()
    assert len(records) == 60
    assert {r.partition for r in records} == {0, 1, 2}
    for key in keys:
        mine = [r for r in records if r.key == key]
        assert {r.partition for r in mine} == {partition_for(key, 3)}, "a key stays on its murmur2 partition"
        assert [int(r.value.split(b":")[1]) for r in mine] == sorted(
            int(r.value.split(b":")[1]) for r in mine
        )
        assert [r.offset for r in mine] == sorted(r.offset for r in mine)


def test_same_key_lands_on_the_same_partition_in_kafka_and_memory(kafka: KafkaBroker, names: Names) -> None:
    keys = [f"key-{i}".encode() for i in range(40)] + [b"AAPL", b"MSFT", b"BTC-USD", b"ETH/USD", b"x"]
    placements: list[dict[bytes, int]] = []
    for bus in (KafkaBus(kafka.bootstrap), MemoryBus()):
        topic = names("placement")
        bus.ensure_topics([TopicSpec(topic, partitions=5)])
        producer = bus.producer("placement")
        for key in keys:
            producer.produce(topic, b"v", key=key)
        producer.flush()
        placements.append({r.key: r.partition for r in bus.read_all(topic) if r.key is not None})
        bus.close()
    kafka_placement, memory_placement = placements
    assert kafka_placement == memory_placement
    assert kafka_placement == {key: partition_for(key, 5) for key in keys}
    assert len(set(kafka_placement.values())) == 5


def test_a_closed_bus_makes_no_more_clients(bus: Bus, names: Names) -> None:
    topic = names("closed")
    bus.ensure_topics([TopicSpec(topic)])
    bus.close()
    calls: dict[str, Callable[[], object]] = {
        "ensure_topics": lambda: bus.ensure_topics([TopicSpec(topic)]),
        "producer": lambda: bus.producer("after-close"),
        "transactional_producer": lambda: bus.transactional_producer(names("txn")),
        "consumer": lambda: bus.consumer(names("group"), [topic]),
        "read_all": lambda: bus.read_all(topic),
    }
    for call in calls.values():
        with pytest.raises(BusError, match="closed"):
            call()


def test_group_resumes_after_the_committed_offset(bus: Bus, names: Names) -> None:
    topic, group = names("resume"), names("group")
    bus.ensure_topics([TopicSpec(topic)])
    producer = bus.producer("resume")
    for i in range(10):
        producer.produce(topic, f"m{i}".encode())
    producer.flush()

    first = bus.consumer(group, [topic])
    done = poll_batch(first, max_records=4)
    assert 1 <= len(done) <= 4
    first.commit()
    first.close()

    second = bus.consumer(group, [topic])
    try:
        rest = drain(second, 10 - len(done))
        assert second.assignment() == [(topic, 0)]
    finally:
        second.close()
    assert values(done) + values(rest) == [f"m{i}".encode() for i in range(10)]


def test_lag_counts_what_is_left_and_reaches_zero_after_a_transaction(bus: Bus, names: Names) -> None:
    topic, group = names("lag"), names("group")
    bus.ensure_topics([TopicSpec(topic)])
    producer = bus.transactional_producer(names("txn"))
    producer.begin()
    for i in range(500):
        producer.produce(topic, f"m{i}".encode())
    producer.commit()
    consumer = bus.consumer(group, [topic], read_committed=True)
    try:
        consumed = 0
        deadline = time.monotonic() + 20.0
        while (topic, 0) not in consumer.lag():  # Kafka reports lag in its periodic statistics
            assert time.monotonic() < deadline, "no lag reported"
            consumed += len(consumer.poll(0.2, max_records=1))
            time.sleep(0.05)
        # As of the last statistics (Kafka: up to one interval old), never beyond what was produced.
        assert 0 < consumer.lag()[(topic, 0)] <= 500
        drain(consumer, 500 - consumed)
        # Caught up, the commit marker after the last record is not lag.
        while consumer.lag().get((topic, 0)) != 0:
            assert time.monotonic() < deadline + 10.0, consumer.lag()
            assert consumer.poll(0.2) == []
    finally:
        consumer.close()


def test_uncommitted_progress_is_redelivered(bus: Bus, names: Names) -> None:
    topic, group = names("redeliver"), names("group")
    bus.ensure_topics([TopicSpec(topic)])
    producer = bus.producer("redeliver")
    for i in range(3):
        producer.produce(topic, f"m{i}".encode())
    producer.flush()
    first = bus.consumer(group, [topic])
    assert values(drain(first, 3)) == [b"m0", b"m1", b"m2"]
    first.close()  # nothing committed
    second = bus.consumer(group, [topic])
    try:
        assert values(drain(second, 3)) == [b"m0", b"m1", b"m2"]
    finally:
        second.close()


def test_latest_start_skips_existing_records(bus: Bus, names: Names) -> None:
    topic = names("latest")
    bus.ensure_topics([TopicSpec(topic)])
    producer = bus.producer("latest")
    producer.produce(topic, b"old")
    producer.flush()
    consumer = bus.consumer(names("group"), [topic], start="latest")
    try:
        wait_assigned(consumer)
        consumer.poll(0.5)
        producer.produce(topic, b"new")
        producer.flush()
        assert values(drain(consumer, 1)) == [b"new"]
    finally:
        consumer.close()


def test_transactions_commit_is_visible_and_abort_is_not(bus: Bus, names: Names) -> None:
    topic = names("txn")
    bus.ensure_topics([TopicSpec(topic)])
    producer = bus.transactional_producer(names("txn"))
    producer.begin()
    producer.produce(topic, b"c1")
    producer.produce(topic, b"c2")
    producer.commit()
    producer.begin()
    producer.produce(topic, b"aborted")
    producer.flush()
    producer.abort()
    producer.begin()
    producer.produce(topic, b"c3")
    producer.commit()

    assert values(bus.read_all(topic)) == [b"c1", b"c2", b"c3"]
    # Both buses keep aborted records in the log: read_uncommitted readers see them, as in Kafka.
    assert values(bus.read_all(topic, read_committed=False)) == [b"c1", b"c2", b"aborted", b"c3"]

    # An open transaction holds read_committed readers back at its first record.
    producer.begin()
    producer.produce(topic, b"pending")
    producer.flush()
    assert values(bus.read_all(topic)) == [b"c1", b"c2", b"c3"]
    assert values(bus.read_all(topic, read_committed=False))[-1] == b"pending"
    committed_reader = bus.consumer(names("group"), [topic])
    try:
        assert values(drain(committed_reader, 3)) == [b"c1", b"c2", b"c3"]
        assert committed_reader.poll(0.5) == []
        producer.commit()
        assert values(drain(committed_reader, 1)) == [b"pending"]
    finally:
        committed_reader.close()
        producer.close()


def test_consume_transform_produce_with_an_aborted_batch(bus: Bus, names: Names) -> None:
    source, sink, group = names("ctp-in"), names("ctp-out"), names("group")
    bus.ensure_topics([TopicSpec(source), TopicSpec(sink)])
    inputs = [f"in{i}".encode() for i in range(10)]
    plain = bus.producer("ctp-source")
    for value in inputs:
        plain.produce(source, value)
    plain.flush()
    plain.close()

    def transform(producer: Any, records: list[Record]) -> None:
        for record in records:
            producer.produce(sink, b"out:" + record.value)

    producer = bus.transactional_producer(names("ctp"))
    first = bus.consumer(group, [source])
    batch1 = poll_batch(first, max_records=4)
    producer.begin()
    transform(producer, batch1)
    producer.commit(ConsumedOffsets.after(first, batch1))

    batch2 = poll_batch(first, max_records=4)
    producer.begin()
    transform(producer, batch2)
    producer.flush()  # the aborted records really reach the log (Kafka would drop unsent ones)
    producer.abort()
    first.close()

    # The aborted batch's offsets were never committed: a new member of the group gets it again.
    second = bus.consumer(group, [source])
    rest = drain(second, len(inputs) - len(batch1))
    assert values(rest[: len(batch2)]) == values(batch2)
    assert values(batch1) + values(rest) == inputs
    producer.begin()
    transform(producer, rest)
    producer.commit(ConsumedOffsets.after(second, rest))
    second.close()
    producer.close()

    assert values(bus.read_all(sink)) == [b"out:" + value for value in inputs]
    everything = values(bus.read_all(sink, read_committed=False))
    assert len(everything) == len(inputs) + len(batch2)
    assert sorted(set(everything)) == sorted(b"out:" + value for value in inputs)

    # Every input's offset was committed in a transaction: the group has nothing left to read.
    third = bus.consumer(group, [source])
    try:
        wait_assigned(third)
        assert third.poll(1.0) == []
    finally:
        third.close()


def test_a_new_transactional_producer_fences_the_old_one(bus: Bus, names: Names) -> None:
    topic, transactional_id = names("fence"), names("fence")
    bus.ensure_topics([TopicSpec(topic)])
    zombie = bus.transactional_producer(transactional_id)
    zombie.begin()
    zombie.produce(topic, b"zombie")
    zombie.flush()

    successor = bus.transactional_producer(transactional_id)
    with pytest.raises(FencedError) as fenced:
        fenced_operation(zombie, topic)
    zombie.close()
    assert not fenced.value.retriable
    if isinstance(bus, KafkaBus):  # the broker's own error code and name come along
        assert fenced.value.code in (
            KafkaError.PRODUCER_FENCED,
            KafkaError._FENCED,
            KafkaError.INVALID_PRODUCER_EPOCH,
        )
        assert fenced.value.name is not None
        assert fenced.value.name in str(fenced.value)

    successor.begin()
    successor.produce(topic, b"successor")
    successor.commit()
    successor.close()
    assert values(bus.read_all(topic)) == [b"successor"]


@pytest.mark.parametrize(
    ("error", "kind", "retriable", "requires_abort"),
    [
        (
            KafkaError(KafkaError.NOT_COORDINATOR, "moved", retriable=True, txn_requires_abort=True),
            BusError,
            True,
            True,
        ),
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"), BusError, False, False),
        (KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True), FencedError, False, False),
    ],
)
def test_kafka_errors_keep_their_code_and_whether_retrying_helps(
    error: KafkaError, kind: type[BusError], retriable: bool, requires_abort: bool
) -> None:
    mapped = _bus_error("commit_transaction", KafkaException(error))
    assert type(mapped) is kind
    assert (mapped.code, mapped.name) == (error.code(), error.name())
    assert (mapped.retriable, mapped.requires_abort) == (retriable, requires_abort)
    assert str(mapped).startswith(f"commit_transaction: {error.str()} ({error.name()})")


def test_ensure_topics_is_idempotent(bus: Bus, names: Names) -> None:
    plain, compacted = names("ensure"), names("ensure-compacted")
    specs = [
        TopicSpec(plain, partitions=2, retention_ms=3_600_000),
        TopicSpec(compacted, partitions=1, compacted=True),
    ]
    bus.ensure_topics(specs)
    bus.ensure_topics(specs)
    bus.ensure_topics([TopicSpec(plain, partitions=4)])  # existing topics are left as they are
    producer = bus.producer("ensure")
    producer.produce(plain, b"p1", partition=1)
    producer.produce(compacted, b"k", key=b"key")
    producer.flush()
    assert [(r.partition, r.value) for r in bus.read_all(plain)] == [(1, b"p1")]
    assert [(r.key, r.value) for r in bus.read_all(compacted)] == [(b"key", b"k")]
    with pytest.raises(BusError):
        produce_and_flush(producer, plain, b"nowhere", partition=2)
    producer.close()


def test_read_all_returns_everything_partition_by_partition(bus: Bus, names: Names) -> None:
    topic, empty = names("readall"), names("readall-empty")
    bus.ensure_topics([TopicSpec(topic, partitions=3), TopicSpec(empty, partitions=2)])
    producer = bus.producer("readall")
    sent = [(f"k{i % 7}".encode(), f"v{i}".encode()) for i in range(50)]
    for key, value in sent:
        producer.produce(topic, value, key=key)
    producer.flush()
    producer.close()

    records = bus.read_all(topic)
    assert bus.read_all(empty) == []
    assert sorted((r.key, r.value) for r in records) == sorted(sent)
    assert [(r.partition, r.offset) for r in records] == sorted((r.partition, r.offset) for r in records)
    for partition in {r.partition for r in records}:
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    for key in {key for key, _ in sent}:
        assert [r.value for r in records if r.key == key] == [value for k, value in sent if k == key]
    assert all(r.topic == topic and r.timestamp_ms > 0 for r in records)


def test_scan_streams_the_topic_or_its_tail_in_batches(bus: Bus, names: Names) -> None:
    """What the executor's bounded rebuild reads: everything in batches, or the last `last` offsets."""
    topic = names("scan")
    bus.ensure_topics([TopicSpec(topic, partitions=1)])
    producer = bus.producer("scan")
    sent = [f"v{i}".encode() for i in range(2500)]
    for value in sent:
        producer.produce(topic, value, key=b"k")
    producer.flush()
    producer.close()

    batches = list(bus.scan(topic))
    assert len(batches) >= 3
    assert all(len(batch) <= 1000 for batch in batches)
    assert [r.value for batch in batches for r in batch] == sent
    assert [r.value for batch in bus.scan(topic, last=10) for r in batch] == sent[-10:]
    assert [r.value for batch in bus.scan(topic, last=10_000) for r in batch] == sent


def test_memory_groups_split_partitions_and_rebalance(names: Names) -> None:
    bus = MemoryBus()
    topic, group = names("split"), names("group")
    first = bus.consumer(group, [topic])
    assert first.assignment() == []  # the topic appears later
    bus.ensure_topics([TopicSpec(topic, partitions=3)])
    assert first.assignment() == [(topic, 0), (topic, 1), (topic, 2)]
    second = bus.consumer(group, [topic])
    assert first.assignment() == [(topic, 0), (topic, 2)]
    assert second.assignment() == [(topic, 1)]
    producer = bus.producer("split")
    for partition in range(3):
        producer.produce(topic, f"p{partition}".encode(), partition=partition)
    assert sorted(values(drain(first, 2))) == [b"p0", b"p2"]
    assert values(drain(second, 1)) == [b"p1"]
    first.commit()
    first.close()
    assert second.assignment() == [(topic, 0), (topic, 1), (topic, 2)]
    assert isinstance(second, MemoryConsumer)
    assert second.positions() == {(topic, 0): 1, (topic, 1): 1, (topic, 2): 1}
    second.close()


def test_memory_poll_wakes_up_on_produce(names: Names) -> None:
    import threading

    bus = MemoryBus()
    topic = names("wake")
    bus.ensure_topics([TopicSpec(topic)])
    consumer = bus.consumer(names("group"), [topic])
    timer = threading.Timer(0.2, lambda: bus.producer("wake").produce(topic, b"hello"))
    started = time.monotonic()
    timer.start()
    try:
        assert values(consumer.poll(5.0)) == [b"hello"]
    finally:
        timer.join()
    assert time.monotonic() - started < 2.0
