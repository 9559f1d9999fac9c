"""Real Kafka (KRaft, combined broker+controller) and Redis for the tests.

Session fixtures `kafka` and `redis_server` start one of each on free 127.0.0.1 ports with
throwaway data dirs, wait until they really serve, and stop them at the end. Tests that must
restart or kill a server (crash-safety tests) start their own with `start_kafka` / `start_redis`.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.plugins._proc import ServerProcess, free_port, port_open, require_tool

KAFKA_READY_TIMEOUT_S = 120.0


# Broker settings every single-node test broker shares (plain and SASL_SSL, tests/plugins/secure_servers.py).
SINGLE_NODE_SETTINGS = (
    # Services create their topics; a typo must not silently create a new one.
    "auto.create.topics.enable=false",
    "num.partitions=1",
    # One node: every internal topic has one replica, and few partitions start fast.
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=4",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "transaction.state.log.num.partitions=4",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "group.initial.rebalance.delay.ms=0",
)


@dataclass
class KafkaBroker:
    """A running single-node KRaft cluster."""

    bootstrap: str
    process: ServerProcess
    data_dir: Path
    topics_created: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    def create_topic(self, name: str, partitions: int = 1, **config: str) -> str:
        """Creates a topic (idempotent) and waits until its leaders are elected."""
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)],
            operation_timeout=30,
        )
        try:
            futures[name].result(timeout=60)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
        self.topics_created.append(name)
        return name

    def unique_topic(self, prefix: str, partitions: int = 1) -> str:
        return self.create_topic(f"{prefix}-{uuid.uuid4().hex[:10]}", partitions)

    def restart(self) -> None:
        """Stops the broker (SIGTERM, clean shutdown) and starts it again on the same ports and data."""
        self.process.restart()
        wait_for_kafka(self)


@dataclass
class RedisServer:
    host: str
    port: int
    process: ServerProcess
    data_dir: Path
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def restart(self, *, keep_data: bool = False) -> None:
        """Restarts redis-server; without `keep_data` everything it held is gone (it never persists)."""
        self.process.restart()
        _wait_for_redis(self)


def _kafka_properties(data_dir: Path, port: int, controller_port: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir / 'logs'}",
            *SINGLE_NODE_SETTINGS,
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=2000",
            "",
        ]
    )


def wait_for_kafka(broker: KafkaBroker) -> None:
    from confluent_kafka.admin import AdminClient

    def serves() -> bool:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 2000})
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:
            return False
        return bool(metadata.brokers)

    # A TCP accept first: librdkafka logs every refused connection, which would flood the output.
    broker.process.wait_until("its port", lambda: port_open(broker.port), KAFKA_READY_TIMEOUT_S)
    broker.process.wait_until("metadata", serves, KAFKA_READY_TIMEOUT_S)
    # Metadata can answer before the controller accepts writes; a topic creation proves it does.
    broker.process.wait_until("a topic creation", lambda: _try_create(broker), KAFKA_READY_TIMEOUT_S)


def _try_create(broker: KafkaBroker) -> bool:
    try:
        broker.create_topic("_tradebot_ready")
    except Exception:
        return False
    return True


def start_kafka(root: Path) -> KafkaBroker:
    """Formats storage under `root` and starts a KRaft broker; the caller must `process.stop()` it."""
    kafka_class = require_tool("kafka-class")
    java = require_tool("java")
    del java  # kafka-class runs it; checked here so a missing JDK names itself
    port, controller_port = free_port(), free_port()
    config = root / "server.properties"
    config.write_text(_kafka_properties(root, port, controller_port))
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = ServerProcess(
        "kafka-format",
        [
            str(kafka_class),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
        ],
        root,
    )
    if fmt.popen.wait(timeout=120) != 0:
        raise RuntimeError(f"kafka storage format failed:\n{fmt.log_tail()}")
    process = ServerProcess("kafka", [str(kafka_class), "kafka.Kafka", str(config)], root)
    broker = KafkaBroker(bootstrap=f"127.0.0.1:{port}", process=process, data_dir=root)
    try:
        wait_for_kafka(broker)
    except BaseException:
        process.stop()
        raise
    return broker


def _wait_for_redis(server: RedisServer) -> None:
    import redis

    def pongs() -> bool:
        try:
            client = redis.Redis(
                host=server.host, port=server.port, password=server.password, socket_timeout=1
            )
            return bool(client.ping())
        except redis.RedisError:
            return False

    server.process.wait_until("PING", pongs, 30)


def start_redis(root: Path, *, password: str | None = None) -> RedisServer:
    """Starts redis-server without persistence (requiring `password` if given); the caller must
    `process.stop()` it."""
    binary = require_tool("redis-server")
    port = free_port()
    argv = [
        str(binary),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(root),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        *(("--requirepass", password) if password is not None else ()),
    ]
    server = RedisServer("127.0.0.1", port, ServerProcess("redis", argv, root), root, password)
    try:
        _wait_for_redis(server)
    except BaseException:
        server.process.stop()
        raise
    return server


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    root = Path(tempfile.mkdtemp(prefix="tradebot-kafka-"))
    try:
        broker = start_kafka(root)
        try:
            yield broker
        finally:
            broker.process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    root = Path(tempfile.mkdtemp(prefix="tradebot-redis-"))
    try:
        server = start_redis(root)
        try:
            yield server
        finally:
            server.process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of the test's own, for tests that restart or kill it."""
    broker = start_kafka(tmp_path)
    try:
        yield broker
    finally:
        broker.process.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.process.stop()
