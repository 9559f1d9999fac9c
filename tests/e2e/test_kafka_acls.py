"""issue 14.7: each component its own Kafka user with only the ACLs `tradebot kafka-acls` gives it, on a real
broker with the StandardAuthorizer: a strategy's credentials cannot write `fills` (or another strategy's state,
or a halt), while the whole pipeline trades with one user per component."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from tests.e2e.harness import SAMPLE, Pipeline
from tests.plugins._proc import free_port
from tests.plugins.secure_servers import ADMIN_PASSWORD, ADMIN_USER, COMPONENT_USERS, SecureKafka
from tests.plugins.servers import RedisServer
from tests.plugins.webhooks import Receiver
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import BusError
from tradebot.adapters.connect import PipelineSettings, kafka_bus
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.kafka_acls import Component, apply_acls, component_acls, kafka_acls_commands
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.topics import (
    COMMANDS,
    CONTROL,
    FILLS,
    ORDERS,
    SIGNALS,
    TICKS,
    HaltCommand,
    pipeline_topics,
    strategy_state_topic,
    strategy_topics,
)
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.notifier.runner import NotifierMetrics, NotifierRunner
from tradebot.notifier.sinks import SinkConfig

# user -> (component, strategy id)
ROLES: dict[str, tuple[Component, str | None]] = {
    "feed": ("feed", None),
    "strategy-a": ("strategy", "a"),
    "strategy-b": ("strategy", "b"),
    "executor": ("executor", None),
    "api": ("api", None),
    "notifier": ("notifier", None),
}


def settings_of(kafka: SecureKafka, user: str, password: str) -> PipelineSettings:
    return PipelineSettings(
        kafka_bootstrap=kafka.bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username=user,
        kafka_sasl_password=password,
        kafka_ssl_ca_file=kafka.ca_file,
    )


def bus_of(kafka: SecureKafka, user: str) -> KafkaBus:
    bus = kafka_bus(settings_of(kafka, user, COMPONENT_USERS[user]))
    assert isinstance(bus, KafkaBus)
    return bus


@pytest.fixture(scope="module")
def acl_kafka(secure_kafka: SecureKafka) -> SecureKafka:
    """The secured broker with every component's ACLs in place and the pipeline's topics made (by the admin)."""
    admin = secure_kafka.client_config(ADMIN_USER, ADMIN_PASSWORD)
    for user, (component, strategy_id) in ROLES.items():
        apply_acls(admin, component_acls(component, user, strategy_id=strategy_id))
    admin_bus = kafka_bus(settings_of(secure_kafka, ADMIN_USER, ADMIN_PASSWORD))
    # Strategy b's state topic exists (strategy a's is made by strategy a itself, in the pipeline test).
    admin_bus.ensure_topics([*pipeline_topics(1), *strategy_topics("b")])
    admin_bus.close()
    return secure_kafka


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("strategy-a", FILLS),  # forging fills
        ("strategy-a", strategy_state_topic("b")),  # another strategy's state
        ("strategy-a", CONTROL),  # halting or resuming anyone
        ("strategy-a", TICKS),  # forging prices
        ("executor", ORDERS),
        ("feed", ORDERS),
        ("api", FILLS),
    ],
)
def test_a_component_cannot_write_what_it_does_not_produce(
    acl_kafka: SecureKafka, user: str, topic: str
) -> None:
    bus = bus_of(acl_kafka, user)
    producer = bus.producer(f"acl-test-{uuid.uuid4().hex[:6]}")
    try:
        producer.produce(topic, b"{}", key=b"forged")
        with pytest.raises(BusError) as caught:
            producer.flush(15.0)
    finally:
        producer.close()
    assert "Topic authorization failed" in str(caught.value)
    assert f"{topic}[" in str(caught.value)  # the error names the topic


def bus_of_admin(kafka: SecureKafka) -> KafkaBus:
    bus = kafka_bus(settings_of(kafka, ADMIN_USER, ADMIN_PASSWORD))
    assert isinstance(bus, KafkaBus)
    return bus


def test_a_strategy_transaction_writing_fills_is_refused(acl_kafka: SecureKafka) -> None:
    """With the strategy's own transactional id (allowed), a transaction that touches `fills` cannot commit."""
    bus = bus_of(acl_kafka, "strategy-a")
    producer = bus.transactional_producer("strategy-a")
    try:
        producer.begin()
        producer.produce(ORDERS, b"{}", key=b"ok")  # allowed
        producer.produce(FILLS, b"{}", key=b"forged")
        with pytest.raises(BusError) as caught:
            producer.commit()
        assert caught.value.name == "TOPIC_AUTHORIZATION_FAILED"
        assert "(writing fills, orders)" in str(caught.value)
        assert "Topic authorization failed" in str(caught.value)
    finally:
        producer.close()
    admin = bus_of_admin(acl_kafka)
    assert not [r for r in admin.read_all(FILLS) if r.key == b"forged"]


def test_another_strategys_transactional_id_is_refused(acl_kafka: SecureKafka) -> None:
    """strategy-a cannot take strategy-b's transactional id (and so cannot fence it)."""
    with pytest.raises(
        BusError, match=r"TRANSACTIONAL_ID_AUTHORIZATION_FAILED|Transactional Id authorization"
    ):
        bus_of(acl_kafka, "strategy-a").transactional_producer("strategy-b")


def test_the_printed_commands_are_kafka_acls_invocations() -> None:
    commands = kafka_acls_commands(component_acls("strategy", "strategy-a", strategy_id="a"), "k:9096")
    assert (
        "kafka-acls --bootstrap-server k:9096 --add --allow-principal User:strategy-a --operation Write --topic orders"
        in commands
    )
    assert not any("--topic fills" in c and "Write" in c for c in commands)
    assert any("--group tradebot-read-all- --resource-pattern-type prefixed" in c for c in commands)


def _security_env(kafka: SecureKafka, user: str) -> dict[str, str]:
    return {
        "TRADEBOT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TRADEBOT_KAFKA_SASL_USERNAME": user,
        "TRADEBOT_KAFKA_SASL_PASSWORD": COMPONENT_USERS[user],
        "TRADEBOT_KAFKA_SSL_CA_FILE": str(kafka.ca_file),
        "TRADEBOT_TOPIC_PARTITIONS": "1",
    }


def test_the_pipeline_trades_with_one_user_per_component(
    acl_kafka: SecureKafka, redis_server: RedisServer, tmp_path: Path
) -> None:
    pipeline = Pipeline(acl_kafka, redis_server, tmp_path)
    prefix = {"TRADEBOT_REDIS_PREFIX": f"acl-{uuid.uuid4().hex[:8]}"}
    simulator_port = free_port()
    pipeline.add(
        "simulator",
        [
            "simulator",
            "--replay",
            str(SAMPLE),
            "--speed",
            "max",
            "--symbol",
            "GOOG",
            "--port",
            str(simulator_port),
        ],
    )
    pipeline.add("executor", ["executor"], **prefix, **_security_env(acl_kafka, "executor"))
    pipeline.add(
        "strategy-a",
        ["strategy"],
        TRADEBOT_STRATEGY_ID="a",
        TRADEBOT_STRATEGY_SYMBOLS="GOOG",
        TRADEBOT_STRATEGY_PARAMS=json.dumps({"short_window": 10, "long_window": 30, "stop_loss_pct": 2.0}),
        **prefix,
        **_security_env(acl_kafka, "strategy-a"),
    )
    pipeline.add(
        "feed",
        ["feed"],
        TRADEBOT_FEED_URL=f"ws://127.0.0.1:{simulator_port}",
        TRADEBOT_SYMBOLS="GOOG",
        **prefix,
        **_security_env(acl_kafka, "feed"),
    )
    admin = bus_of_admin(acl_kafka)
    try:
        for name in ("executor", "strategy-a", "simulator", "feed"):
            pipeline.services[name].start()

        def filled() -> bool:
            fills = [json.loads(r.value) for r in admin.read_all(FILLS)]
            return any(f["order"]["strategy_id"] == "a" and f["fill"]["status"] == "filled" for f in fills)

        pipeline.wait_until("a fill of strategy a", filled, timeout=90)
        assert admin.read_all(strategy_state_topic("a"))  # its snapshot, on its own topic
        assert admin.read_all(SIGNALS)
    finally:
        pipeline.stop_all()
    logs = pipeline.logs()
    assert "AUTHORIZATION_FAILED" not in logs, logs


async def test_the_notifier_reads_the_events_with_its_own_user(
    acl_kafka: SecureKafka, redis_server: RedisServer, receiver: Receiver
) -> None:
    """Its ACLs are enough to consume under its group: a halt the api user records reaches the sink. It may
    write nothing (without a WRITE anywhere Kafka does not even give its producer an id)."""
    acls = component_acls("notifier", "notifier")
    assert {
        (a.name, a.operation) for a in acls if a.operation in ("READ", "WRITE") and a.resource == "topic"
    } == {
        (FILLS, "READ"),
        (CONTROL, "READ"),
        (COMMANDS, "READ"),
    }
    api = bus_of(acl_kafka, "api")
    notifier_bus = bus_of(acl_kafka, "notifier")
    store = RedisStore(redis_server.url, prefix=f"acl-notify-{uuid.uuid4().hex[:8]}")
    sid = f"n{uuid.uuid4().hex[:8]}"
    runner = NotifierRunner(
        bus=notifier_bus,
        store=store,
        sinks=[SinkConfig(name="ops", kind="slack", url=SecretStr(receiver.url("/ops")), strategies=[sid])],
        metrics=NotifierMetrics(CollectorRegistry()),
        start="earliest",
        poll_timeout_s=0.05,
    )
    shutdown = ShutdownEvent()
    task = asyncio.create_task(runner.run(shutdown))
    try:
        await until("the notifier's partitions", lambda: runner.ready, within_s=60)
        producer = api.producer("acl-notifier-test")
        halt = HaltCommand(strategy_id=sid, halted=True)
        producer.produce(CONTROL, halt.model_dump_json().encode(), key=halt.key())
        await asyncio.to_thread(producer.flush, 15.0)
        producer.close()
        await until("the halt at the sink", lambda: len(receiver.to("/ops")) == 1, within_s=60)
    finally:
        shutdown.set()
        await task
        api.close()
        notifier_bus.close()
        await store.close()
    assert receiver.to("/ops")[0].body == {"text": f"[{sid}] halted: no new entries"}
