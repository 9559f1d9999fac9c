"""A real three-node KRaft cluster for the broker-loss tests.

Each node is broker and controller at once (combined mode, the quorum is all three), its own JVM in its
own process group on free 127.0.0.1 ports with its data under the test's tmp dir, so a test can
`kill -9` one node by its PID and start it again on the same ports and data. The internal topics
(consumer offsets, transaction state) have three replicas and `min.insync.replicas` 2, as a production
cluster of three would; the broker defaults for other topics stay Kafka's own (one replica), so the
replication our topics get is what the services ask for, not what the cluster hands out.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins._proc import ServerProcess, free_port, require_tool
from tests.plugins.servers import KafkaBroker, wait_for_kafka

NODES = 3
# Three JVMs share two cores with the rest of the suite: small heaps, and the C1 compiler only (it starts
# faster and compiles less; a test's load needs no C2).
HEAP_OPTS = "-Xms64m -Xmx256m -XX:TieredStopAtLevel=1"


@dataclass
class KafkaCluster:
    """Three running KRaft nodes; `bootstrap` lists them all (what the services are given)."""

    nodes: dict[int, KafkaBroker]
    root: Path

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    def node(self, node_id: int) -> KafkaBroker:
        return self.nodes[node_id]

    def kill(self, node_id: int) -> None:
        """SIGKILL to the node's process group: a crash, no clean shutdown, no leadership hand-over."""
        self.nodes[node_id].process.kill()

    def start(self, node_id: int) -> None:
        """Starts a stopped node on its ports and data, and waits until it serves."""
        node = self.nodes[node_id]
        node.process.start()
        wait_for_kafka(node)

    def running(self) -> list[int]:
        return [node_id for node_id, node in self.nodes.items() if node.process.running]

    def active_controller(self) -> int:
        """The metadata quorum's leader (the active controller), as `kafka-metadata-quorum describe
        --status` reports it. (A broker's metadata answer names a random broker as "controller" under
        KRaft, so the admin client cannot tell.)"""
        kafka_class = require_tool("kafka-class")
        out = subprocess.run(
            [
                str(kafka_class),
                "org.apache.kafka.tools.MetadataQuorumCommand",
                "--bootstrap-server",
                self.bootstrap,
                "describe",
                "--status",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "KAFKA_HEAP_OPTS": "-Xmx128m -XX:TieredStopAtLevel=1"},
            check=True,
        ).stdout
        for line in out.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "LeaderId":
                return int(value)
        raise AssertionError(f"no LeaderId in kafka-metadata-quorum's answer:\n{out}")

    def stop(self) -> None:
        """Kills every node: their data is thrown away, and a clean shutdown of the last nodes of a quorum
        waits out timeouts (about 20 s) for nothing."""
        for node in self.nodes.values():
            node.process.kill()


def _node_properties(node_id: int, data_dir: Path, port: int, controller_port: int, voters: str) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir / 'logs'}",
            "auto.create.topics.enable=false",
            "num.partitions=1",
            # Kafka's own defaults, spelled out: a topic gets three replicas only if its creator asks.
            "default.replication.factor=1",
            "min.insync.replicas=1",
            # The internal topics as three brokers should have them: a transaction or a group commit
            # survives one broker's loss and is never acknowledged by one replica alone.
            "offsets.topic.replication.factor=3",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=3",
            "share.coordinator.state.topic.min.isr=2",
            "group.initial.rebalance.delay.ms=0",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=2000",
            "",
        ]
    )


def start_kafka_cluster(root: Path) -> KafkaCluster:
    """Formats three nodes' storage under `root` with one cluster id and starts them; the caller must
    `stop()` the cluster."""
    kafka_class = require_tool("kafka-class")
    require_tool("java")  # kafka-class runs it; checked here so a missing JDK names itself
    ports = {node_id: (free_port(), free_port()) for node_id in range(1, NODES + 1)}
    voters = ",".join(f"{node_id}@127.0.0.1:{controller}" for node_id, (_, controller) in ports.items())
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    env = {**os.environ, "KAFKA_HEAP_OPTS": HEAP_OPTS}
    nodes: dict[int, KafkaBroker] = {}
    cluster = KafkaCluster(nodes, root)
    try:
        formats = []
        for node_id, (port, controller_port) in ports.items():
            data_dir = root / f"node{node_id}"
            data_dir.mkdir(parents=True)
            config = data_dir / "server.properties"
            config.write_text(_node_properties(node_id, data_dir, port, controller_port, voters))
            argv = [str(kafka_class), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}"]
            formats.append(ServerProcess("kafka-format", [*argv, "-c", str(config)], data_dir, env=env))
        for fmt in formats:
            if fmt.popen.wait(timeout=120) != 0:
                raise RuntimeError(f"kafka storage format failed:\n{fmt.log_tail()}")
        for node_id, (port, _) in ports.items():
            data_dir = root / f"node{node_id}"
            process = ServerProcess(
                f"kafka-{node_id}",
                [str(kafka_class), "kafka.Kafka", str(data_dir / "server.properties")],
                data_dir,
                env=env,
            )
            nodes[node_id] = KafkaBroker(bootstrap=f"127.0.0.1:{port}", process=process, data_dir=data_dir)
        # All three start at once: the quorum needs two of them before any can serve.
        for node in nodes.values():
            wait_for_kafka(node)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[KafkaCluster]:
    root = Path(tempfile.mkdtemp(prefix="tradebot-kafka3-"))
    cluster = start_kafka_cluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
