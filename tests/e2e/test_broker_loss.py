"""A three-broker KRaft cluster loses a broker (`kill -9`) while the pipeline trades, and gets it back.

The services run as processes (simulator random walks -> feed -> strategy -> executor, real Redis) with
every broker in their bootstrap list. One test kills a broker that leads partitions but is not the active
controller, the other kills the active controller (in combined mode it is a broker too); each starts it
again once fills flow without it. Both then drain the pipeline and check: the topics the services made
have three replicas and `min.insync.replicas` 2; every order on `orders` has exactly one fill on `fills`,
none lost, none doubled; the ticks of each symbol arrived once each, none missing; fills kept coming
with the broker down and after it came back. The longest pause in fills around the kill is printed (and
kept as the test's `longest_fill_pause_s` property); it is only bounded generously, not asserted.
Also on the cluster: a topic made before with fewer replicas is left as it is, and reported.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from tests.e2e.harness import Pipeline, read_topic
from tests.plugins._proc import eventually, free_port
from tests.plugins.kafka_cluster import KafkaCluster
from tests.plugins.servers import RedisServer
from tradebot.adapters.bus import TopicSpec
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.topics import FILLS, ORDERS, TICKS, pipeline_topics

# Windows this short cross every few ticks on a random walk: a steady flow of orders, a few a second.
PARAMS = {"short_window": 2, "long_window": 5, "stop_loss_pct": 2.0}
# The pipeline must be trading again within this long after a kill (Kafka's own failure detection, the
# fenced broker's session timeout of 9 s, is most of it); it bounds a stop, not the latency.
RESUME_WITHIN_S = 60.0
FILLS_BETWEEN_STEPS = 15


@dataclass
class FillWatch:
    """Polls the executor's fills stream in Redis from a thread (Redis, not Kafka: the watch must not
    stall with the broker it watches) and notes when the count moved."""

    redis_url: str
    moves: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> FillWatch:
        self._thread = threading.Thread(target=self._run, name="fill-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=5)

    def _run(self) -> None:
        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        last = -1
        while not self._stop.is_set():
            try:
                length = client.xlen("tradebot:fills")
                assert isinstance(length, int)  # the sync client (its stubs cover the async one too)
                count = length
            except redis.RedisError:
                count = last
            if count != last:
                self.moves.append((time.monotonic(), count))
                last = count
            self._stop.wait(0.02)

    def count(self) -> int:
        return self.moves[-1][1] if self.moves else 0

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time between two moves of the count within [start, end] (the ends count too)."""
        stamps = [start, *(t for t, _ in self.moves if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(stamps))


def wait_for_fills(pipeline: Pipeline[KafkaCluster], watch: FillWatch, more_than: int, why: str) -> None:
    pipeline.wait_until(why, lambda: watch.count() > more_than, timeout=RESUME_WITHIN_S)


def start_trading(pipeline: Pipeline[KafkaCluster], strategy_id: str, symbols: str) -> None:
    simulator_port = free_port()
    pipeline.add(
        "simulator",
        ["simulator", "--port", str(simulator_port)],
        TRADEBOT_SYMBOLS=symbols,
        TRADEBOT_SIMULATOR_INTERVAL_S="0.05",
        TRADEBOT_SIMULATOR_SEED="11",
    )
    pipeline.add("executor", ["executor"])
    pipeline.add(
        f"strategy-{strategy_id}",
        ["strategy"],
        TRADEBOT_STRATEGY_ID=strategy_id,
        TRADEBOT_STRATEGY_SYMBOLS=symbols,
        TRADEBOT_STRATEGY_PARAMS=json.dumps(PARAMS),
    )
    pipeline.add(
        "feed", ["feed"], TRADEBOT_FEED_URL=f"ws://127.0.0.1:{simulator_port}", TRADEBOT_SYMBOLS=symbols
    )
    for service in pipeline.services.values():
        service.start()


def our_topics() -> list[str]:
    return [spec.name for spec in pipeline_topics()]


def partition_leaders(cluster: KafkaCluster) -> Counter[int]:
    """How many partitions of the pipeline's topics and of the transaction log each broker leads."""
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=30)
    led: Counter[int] = Counter()
    for name in [*our_topics(), "__transaction_state"]:
        for partition in metadata.topics[name].partitions.values():
            led[partition.leader] += 1
    return led


def fully_replicated(cluster: KafkaCluster) -> bool:
    """Every partition of the pipeline's topics and of Kafka's internal ones has all three replicas in sync."""
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(timeout=10)
    names = [*our_topics(), "__consumer_offsets", "__transaction_state"]
    return all(
        name in metadata.topics and all(len(p.isrs) == 3 for p in metadata.topics[name].partitions.values())
        for name in names
    )


def assert_three_replicas(cluster: KafkaCluster) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    metadata = admin.list_topics(timeout=30)
    replicas = {
        name: sorted({len(p.replicas) for p in metadata.topics[name].partitions.values()})
        for name in our_topics()
    }
    assert replicas == {name: [3] for name in our_topics()}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in our_topics()]
    in_sync = {
        resource.name: future.result(timeout=30)["min.insync.replicas"].value
        for resource, future in admin.describe_configs(resources).items()
    }
    assert in_sync == dict.fromkeys(our_topics(), "2")


def assert_exactly_once(cluster: KafkaCluster, strategy_id: str, symbols: str) -> int:
    """Every order of the strategy has exactly one fill and vice versa; the ticks of each symbol came
    once each, in order, none missing. Returns the number of orders."""
    orders = [o for o in read_topic(cluster.bootstrap, ORDERS) if o["strategy_id"] == strategy_id]
    fills = [f for f in read_topic(cluster.bootstrap, FILLS) if f["order"]["strategy_id"] == strategy_id]
    order_ids = Counter(o["id"] for o in orders)
    fill_ids = Counter(f["order"]["id"] for f in fills)
    assert [oid for oid, n in order_ids.items() if n > 1] == [], "orders committed twice"
    assert [oid for oid, n in fill_ids.items() if n > 1] == [], "orders filled twice"
    assert sorted(set(order_ids) - set(fill_ids)) == [], "orders without a fill"
    assert sorted(set(fill_ids) - set(order_ids)) == [], "fills without an order"
    seqs: dict[str, list[int]] = {}
    for tick in read_topic(cluster.bootstrap, TICKS):
        if tick["symbol"] in symbols.split(","):
            seqs.setdefault(tick["symbol"], []).append(tick["seq"])
    for symbol, numbers in seqs.items():
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), (
            f"{symbol}: ticks lost or doubled"
        )
    return len(orders)


def drain(pipeline: Pipeline[KafkaCluster], strategy_id: str) -> None:
    """Stops the source and waits until every order the strategy committed has its fill."""
    pipeline.services["simulator"].stop()

    def settled() -> bool:
        orders = {
            o["id"] for o in read_topic(pipeline.kafka.bootstrap, ORDERS) if o["strategy_id"] == strategy_id
        }
        fills = {
            f["order"]["id"]
            for f in read_topic(pipeline.kafka.bootstrap, FILLS)
            if f["order"]["strategy_id"] == strategy_id
        }
        return bool(orders) and orders <= fills

    pipeline.wait_until("every order filled", settled, timeout=RESUME_WITHIN_S)
    time.sleep(1.0)  # a duplicate fill, if any, would land now


@pytest.fixture
def cluster_pipeline(
    kafka_cluster: KafkaCluster, own_redis: RedisServer, tmp_path: Path
) -> Iterator[Pipeline[KafkaCluster]]:
    logs = tmp_path / "service-logs"
    logs.mkdir()
    running = Pipeline(kafka_cluster, own_redis, logs)
    try:
        yield running
    finally:
        running.stop_all()
        for node_id in kafka_cluster.nodes:  # a failed test must not leave the next one a broker short
            if node_id not in kafka_cluster.running():
                kafka_cluster.start(node_id)


def lose_and_regain(
    pipeline: Pipeline[KafkaCluster],
    strategy_id: str,
    symbols: str,
    pick_victim: Callable[[KafkaCluster], int],
    record_property: Callable[[str, object], None],
) -> None:
    cluster = pipeline.kafka
    start_trading(pipeline, strategy_id, symbols)
    with FillWatch(pipeline.redis.url) as watch:
        wait_for_fills(pipeline, watch, FILLS_BETWEEN_STEPS, "fills before the kill")
        assert_three_replicas(cluster)
        victim: int = pick_victim(cluster)

        before = watch.count()
        killed_at = time.monotonic()
        cluster.kill(victim)
        wait_for_fills(pipeline, watch, before + FILLS_BETWEEN_STEPS, f"fills with broker {victim} down")
        resumed_down = time.monotonic() - killed_at

        cluster.start(victim)
        pipeline.wait_until(f"broker {victim} back in sync", lambda: fully_replicated(cluster), 90)
        rejoined_at = time.monotonic()
        wait_for_fills(pipeline, watch, watch.count() + FILLS_BETWEEN_STEPS, "fills after the restart")
        pause = watch.longest_pause(killed_at - 5.0, time.monotonic())
        record_property("longest_fill_pause_s", round(pause, 2))
        print(
            f"\n[broker loss: {strategy_id}] killed broker {victim}; longest pause in fills around the kill "
            f"{pause:.2f}s; {FILLS_BETWEEN_STEPS} more fills {resumed_down:.1f}s after the kill; back in sync "
            f"{rejoined_at - killed_at:.1f}s after the kill"
        )
        assert pause < RESUME_WITHIN_S
    drain(pipeline, strategy_id)
    assert all(service.running for name, service in pipeline.services.items() if name != "simulator")
    n_orders = assert_exactly_once(cluster, strategy_id, symbols)
    assert n_orders > 3 * FILLS_BETWEEN_STEPS


def a_leader_not_controller(cluster: KafkaCluster) -> int:
    controller = cluster.active_controller()
    led = partition_leaders(cluster)
    return max((node for node in cluster.nodes if node != controller), key=lambda node: led[node])


def test_a_partition_leader_killed_and_restarted(
    cluster_pipeline: Pipeline[KafkaCluster], record_property: Callable[[str, object], None]
) -> None:
    lose_and_regain(
        cluster_pipeline, "broker-loss", "AAA,BBB,CCC,DDD", a_leader_not_controller, record_property
    )


def test_the_active_controller_killed_and_restarted(
    cluster_pipeline: Pipeline[KafkaCluster], record_property: Callable[[str, object], None]
) -> None:
    lose_and_regain(
        cluster_pipeline,
        "controller-loss",
        "EEE,FFF,GGG,HHH",
        KafkaCluster.active_controller,
        record_property,
    )


def test_new_topics_get_three_replicas_and_an_old_one_with_fewer_is_reported(
    kafka_cluster: KafkaCluster, caplog: pytest.LogCaptureFixture
) -> None:
    old = kafka_cluster.node(1).create_topic(f"made-on-one-broker-{uuid.uuid4().hex[:8]}")  # one replica
    new = f"made-on-three-{uuid.uuid4().hex[:8]}"
    bus = KafkaBus(kafka_cluster.bootstrap)
    try:
        with caplog.at_level(logging.WARNING, logger="tradebot.adapters.kafka"):
            bus.ensure_topics([TopicSpec(old), TopicSpec(new)])
    finally:
        bus.close()
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})

    def replicas(name: str) -> list[int] | None:
        # The broker asked may not have applied the newest metadata yet (more so one just restarted).
        topic = admin.list_topics(timeout=30).topics.get(name)
        return None if topic is None else [len(p.replicas) for p in topic.partitions.values()]

    assert eventually(f"{new} in the metadata", lambda: replicas(new)) == [3]
    assert eventually(f"{old} in the metadata", lambda: replicas(old)) == [1]  # left as it was
    reported = [(r.__dict__.get("topic"), r.__dict__.get("replicas")) for r in caplog.records]
    assert reported == [(old, 1)]
