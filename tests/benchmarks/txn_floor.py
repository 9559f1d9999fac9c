"""The parts of the raw latency floor, each run as its own process by `test_live_latency_bench.py` so that
no two share a Python interpreter (and its GIL), as no two pipeline services do.

    txn_floor.py feed BOOTSTRAP TOPIC RATE SECONDS   records stamped with time.time() at RATE per second
    txn_floor.py loop BOOTSTRAP IN OUT SECONDS       consume, produce one per record, send offsets, commit
    txn_floor.py observe BOOTSTRAP TOPIC KIND SECONDS WARMUP_S   latency of each committed record
                                                     (KIND: raw, ticks, orders or fills)
    txn_floor.py produced BOOTSTRAP TOPIC KIND FROM TO   afterwards: stamp to CreateTime of the records
                                                     stamped between FROM and TO (epoch seconds)

The loop is the pipeline's exactly-once hop with nothing else: each poll batch (what is fetched, as
`TransactionalLoop` does) is one transaction. Its producer and consumer use the pipeline's settings
(`adapters/kafka.py`): idempotent, acks=all, linger.ms=1, lz4; read_committed, fetch.wait.max.ms=5. Its
source (`feed`) batches like the pipeline's feed (linger.ms=5, `TRADEBOT_FEED_LINGER_MS`).
`observe` prints JSON: per-record latency percentiles from the stamp in the record (KIND `raw`: the
feed's send time; `orders` and `fills`: the tick's time, set by the simulator when it sent the tick) to when a
read_committed consumer sees it, on the host's wall clock (every process is on this host).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

PRODUCER: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 1,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",
}
# The feed's producer (`TRADEBOT_FEED_LINGER_MS`): the floor's source batches as the pipeline's does.
FEED_PRODUCER: dict[str, Any] = {**PRODUCER, "linger.ms": 5}
# The services' transactional producer (see KafkaBus.transactional_producer for why the short back-off).
TRANSACTIONAL: dict[str, Any] = {**PRODUCER, "retry.backoff.ms": 5, "retry.backoff.max.ms": 50}
CONSUMER: dict[str, Any] = {
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
    "auto.offset.reset": "earliest",
    "fetch.wait.max.ms": 5,
}


def fetched(consumer: Consumer, most: int) -> list[Message]:
    """Up to `most` messages, as soon as there is one (as `adapters/kafka.py` polls): `consume(n, t)`
    alone waits all of `t` unless n messages came, which would add up to `t` to every latency here."""
    messages = consumer.consume(most, 0)
    if messages:
        return messages
    first = consumer.poll(0.05)
    return [first, *consumer.consume(most - 1, 0)] if first is not None else []


def feed(bootstrap: str, topic: str, rate: float, seconds: float) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, **FEED_PRODUCER})
    start = time.time()
    sent = 0
    while (now := time.time()) - start < seconds:
        due = int((now - start) * rate)
        while sent < due:
            producer.produce(topic, str(time.time()).encode(), key=f"S{sent % 100:03d}".encode())
            sent += 1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)
    print(json.dumps({"sent": sent, "rate": sent / (time.time() - start)}))


def loop(bootstrap: str, source: str, sink: str, seconds: float) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"floor-{sink}", **TRANSACTIONAL}
    )
    producer.init_transactions(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-{sink}", **CONSUMER})
    consumer.subscribe([source])
    commits: list[float] = []
    batches: list[int] = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        messages = [m for m in fetched(consumer, 5000) if m.error() is None]
        if not messages:
            continue
        producer.begin_transaction()
        after: dict[tuple[str, int], int] = {}
        for message in messages:
            producer.produce(sink, message.value(), key=message.key())
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:  # never for a consumed record
                raise RuntimeError("a consumed record without its position")
            after[(topic, partition)] = offset + 1
        producer.poll(0)
        offsets = [TopicPartition(t, p, o) for (t, p), o in after.items()]
        started = time.perf_counter()
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 10)
        producer.commit_transaction(10)
        commits.append((time.perf_counter() - started) * 1000)
        batches.append(len(messages))
    consumer.close()
    print(
        json.dumps(
            {
                "transactions": len(commits),
                "commit_p50_ms": float(np.percentile(commits, 50)) if commits else None,
                "commit_p99_ms": float(np.percentile(commits, 99)) if commits else None,
                "batch_mean": float(np.mean(batches)) if batches else None,
            }
        )
    )


def stamp(kind: str, value: bytes) -> float:
    if kind == "raw":
        return float(value)
    # A tick, and an order made from it, carry the tick's timestamp (the simulator's wall clock at
    # send); a fill carries its order.
    document = json.loads(value)
    return datetime.fromisoformat((document["order"] if kind == "fills" else document)["ts"]).timestamp()


def percentiles(values: list[float], prefix: str) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None}
    return {
        f"{prefix}p50_ms": float(np.percentile(values, 50)),
        f"{prefix}p99_ms": float(np.percentile(values, 99)),
    }


def observe(bootstrap: str, topic: str, kind: str, seconds: float, warmup_s: float) -> None:
    """Besides stamp to seen, stamp to the record's CreateTime (when its producer called produce(), before
    any commit), which splits a hop's work from its wait for the commit and the fetch. `ticks` is
    sampled (one record in 20): its observer must not take the CPU the pipeline is measured on."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"observe-{topic}", **CONSUMER})
    consumer.subscribe([topic])
    every = 20 if kind == "ticks" else 1
    seen_ms: list[float] = []
    made_ms: list[float] = []
    start = time.time()
    count = 0
    while time.time() - start < seconds:
        for message in fetched(consumer, 1000):
            count += 1
            if message.error() is None and count % every == 0:
                seen = time.time()
                if seen - start >= warmup_s:
                    sent = stamp(kind, message.value() or b"")
                    seen_ms.append((seen - sent) * 1000)
                    made_ms.append(message.timestamp()[1] - sent * 1000)
    consumer.close()
    print(json.dumps({"count": len(seen_ms), **percentiles(seen_ms, ""), **percentiles(made_ms, "made_")}))


def produced(bootstrap: str, topic: str, kind: str, since: float, until: float) -> None:
    """Stamp to CreateTime (when the producer called produce()) of the records stamped in [since, until],
    read after the fact: a hop's produce time needs no consumer running beside the pipeline (one more
    would take broker and CPU time from what is measured, and the floor has one observer). `ticks` is
    sampled (one record in 20) to bound the parsing."""
    # Partition EOF marks each end: the last offset of a transactional topic is a marker, never returned.
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"produced-{topic}",
            "enable.partition.eof": True,
            **CONSUMER,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    every = 20 if kind == "ticks" else 1
    made_ms: list[float] = []
    count = 0
    done: set[int] = set()
    deadline = time.time() + 60
    while len(done) < len(partitions) and time.time() < deadline:
        for message in consumer.consume(5000, 0.5):
            partition, offset, error = message.partition(), message.offset(), message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF and partition is not None:
                done.add(partition)
            if error is not None or partition is None or offset is None:
                continue
            count += 1
            if count % every:
                continue
            sent = stamp(kind, message.value() or b"")
            if since <= sent <= until:
                made_ms.append(message.timestamp()[1] - sent * 1000)
    consumer.close()
    print(json.dumps({"count": len(made_ms), **percentiles(made_ms, "made_")}))


def main(argv: list[str]) -> None:
    mode, bootstrap, *rest = argv
    if mode == "feed":
        feed(bootstrap, rest[0], float(rest[1]), float(rest[2]))
    elif mode == "loop":
        loop(bootstrap, rest[0], rest[1], float(rest[2]))
    elif mode == "observe":
        observe(bootstrap, rest[0], rest[1], float(rest[2]), float(rest[3]))
    elif mode == "produced":
        produced(bootstrap, rest[0], rest[1], float(rest[2]), float(rest[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
