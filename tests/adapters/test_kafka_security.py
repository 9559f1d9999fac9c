"""issue 13.12: the services against a Kafka that wants SASL (SCRAM-SHA-512 or PLAIN) over TLS, as managed
Kafka does: the right credentials and CA work end to end; a wrong password, a wrong mechanism or an untrusted
CA is refused with the reason and the settings to check, and readiness says no."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.plugins._proc import ServerProcess, eventually, free_port, http_ok
from tests.plugins.secure_servers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    PLAIN_USERS,
    SecureKafka,
    make_certificates,
)
from tests.plugins.servers import RedisServer
from tradebot.adapters.bus import BusError, TopicSpec
from tradebot.adapters.connect import PipelineSettings, kafka_bus, kafka_ready
from tradebot.adapters.kafka import KafkaBus
from tradebot.kit.health import Readiness
from tradebot.kit.settings import SettingsError, load_settings

PLAIN_USER, PLAIN_PASSWORD = next(iter(PLAIN_USERS.items()))


def secure_settings(
    kafka: SecureKafka, user: str, password: str, mechanism: str = "SCRAM-SHA-512", **more: Any
) -> PipelineSettings:
    return PipelineSettings(
        kafka_bootstrap=kafka.bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=user,
        kafka_sasl_password=password,
        **({"kafka_ssl_ca_file": kafka.ca_file} | more),
    )


def round_trip(settings: PipelineSettings) -> list[bytes]:
    """Creates a topic, writes a record in a transaction and reads it back, through the services' bus."""
    bus = kafka_bus(settings)
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    try:
        bus.ensure_topics([TopicSpec(topic)])
        producer = bus.transactional_producer(f"txn-{topic}")
        try:
            producer.begin()
            producer.produce(topic, b"over SASL_SSL", key=b"k")
            producer.commit()
        finally:
            producer.close()
        return [record.value for record in bus.read_all(topic)]
    finally:
        bus.close()


@pytest.mark.parametrize(
    ("user", "password", "mechanism"),
    [(ADMIN_USER, ADMIN_PASSWORD, "SCRAM-SHA-512"), (PLAIN_USER, PLAIN_PASSWORD, "PLAIN")],
)
async def test_the_right_credentials_work_end_to_end(
    secure_kafka: SecureKafka, user: str, password: str, mechanism: str
) -> None:
    settings = secure_settings(secure_kafka, user, password, mechanism)
    assert round_trip(settings) == [b"over SASL_SSL"]
    assert (await Readiness({"kafka": kafka_ready(settings)}).evaluate()).ready


def test_the_ca_can_be_given_as_pem_text(secure_kafka: SecureKafka) -> None:
    """What a strategy pod gets from its shared-env Secret: the CA itself, not a file."""
    settings = secure_settings(
        secure_kafka,
        ADMIN_USER,
        ADMIN_PASSWORD,
        kafka_ssl_ca_file=None,
        kafka_ssl_ca_pem=secure_kafka.ca_file.read_text(),
    )
    assert round_trip(settings) == [b"over SASL_SSL"]


@pytest.mark.parametrize(
    ("user", "password", "mechanism", "reason"),
    [
        (
            ADMIN_USER,
            "not-the-password",
            "SCRAM-SHA-512",
            "invalid credentials with SASL mechanism SCRAM-SHA-512",
        ),
        (PLAIN_USER, "not-the-password", "PLAIN", "Invalid username or password"),
        ("nobody", ADMIN_PASSWORD, "SCRAM-SHA-512", "invalid credentials"),
    ],
)
async def test_wrong_credentials_are_refused_naming_the_reason_and_the_settings(
    secure_kafka: SecureKafka, user: str, password: str, mechanism: str, reason: str
) -> None:
    settings = secure_settings(secure_kafka, user, password, mechanism)
    with pytest.raises(BusError) as caught:
        kafka_bus(settings).ensure_topics([TopicSpec("never-made")])
    error = caught.value
    assert error.name == "CONNECTION_REFUSED"
    assert not error.retriable
    assert reason in str(error)
    assert "TRADEBOT_KAFKA_SASL_USERNAME" in str(error)
    assert "TRADEBOT_KAFKA_SASL_PASSWORD" in str(error)
    assert password not in str(error)
    report = await Readiness({"kafka": kafka_ready(settings)}).evaluate()
    assert report.failing == ["kafka"]


async def test_an_untrusted_broker_certificate_is_refused(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    other_ca = make_certificates(tmp_path / "other").ca_file
    settings = secure_settings(secure_kafka, ADMIN_USER, ADMIN_PASSWORD, kafka_ssl_ca_file=other_ca)
    with pytest.raises(BusError) as caught:
        kafka_bus(settings).ensure_topics([TopicSpec("never-made")])
    assert "certificate verify failed" in str(caught.value)
    assert "TRADEBOT_KAFKA_SSL_CA_FILE" in str(caught.value)
    assert not (await Readiness({"kafka": kafka_ready(settings)}).evaluate()).ready


def test_plaintext_clients_are_not_let_in(secure_kafka: SecureKafka) -> None:
    """The listener really wants SASL_SSL: a PLAINTEXT client gets nothing (no silent downgrade)."""
    bus = KafkaBus(secure_kafka.bootstrap)
    with pytest.raises(BusError, match="Failed to get metadata"):
        bus.check_connection(timeout=3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "needs TRADEBOT_KAFKA_SASL_USERNAME and TRADEBOT_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_sasl_username": "u", "kafka_sasl_password": "pw-xyzzy"},
            "TRADEBOT_KAFKA_SECURITY_PROTOCOL is PLAINTEXT",
        ),
        ({"kafka_ssl_ca_pem": "-----BEGIN CERTIFICATE-----"}, "no TLS"),
        ({"kafka_ssl_ca_file": "/nonexistent/ca.pem"}, "TRADEBOT_KAFKA_SSL_CA_FILE"),
        ({"redis_ssl_ca_pem": "-----BEGIN CERTIFICATE-----"}, "not rediss://"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "TRADEBOT_KAFKA_SASL_MECHANISM"),
    ],
)
def test_inconsistent_security_settings_are_refused_at_start(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(PipelineSettings, **overrides)
    assert message in str(caught.value)
    assert "pw-xyzzy" not in str(caught.value)


def test_the_sasl_password_is_never_shown() -> None:
    settings = PipelineSettings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc", kafka_sasl_password="pw-xyzzy"
    )
    shown = repr(settings) + str(settings.safe_dump()) + settings.model_dump_json()
    assert "pw-xyzzy" not in shown
    assert settings.safe_dump()["kafka_sasl_username"] == "svc"
    assert settings.kafka_client_config()["sasl.password"] == "pw-xyzzy"  # the client still gets it


def _service_env(kafka: SecureKafka, redis: RedisServer, password: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "TRADEBOT_REDIS_URL": redis.url,
        "TRADEBOT_REDIS_PREFIX": f"sec-{uuid.uuid4().hex[:8]}",
        "TRADEBOT_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "TRADEBOT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TRADEBOT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TRADEBOT_KAFKA_SASL_USERNAME": ADMIN_USER,
        "TRADEBOT_KAFKA_SASL_PASSWORD": password,
        "TRADEBOT_KAFKA_SSL_CA_FILE": str(kafka.ca_file),
        "TRADEBOT_TOPIC_PARTITIONS": "1",
        "TRADEBOT_HTTP_HOST": "127.0.0.1",
        "TRADEBOT_HTTP_PORT": str(port),
        "TRADEBOT_LOG_LEVEL": "DEBUG",
    }


def test_an_executor_process_runs_with_the_right_password_and_stops_naming_the_wrong_one(
    secure_kafka: SecureKafka, redis_server: RedisServer, tmp_path: Path
) -> None:
    right_port, wrong_port = free_port(), free_port()
    right = ServerProcess(
        "executor-right",
        [sys.executable, "-m", "tradebot.cli", "executor"],
        tmp_path,
        env=_service_env(secure_kafka, redis_server, ADMIN_PASSWORD, right_port),
    )
    try:
        right.wait_until("/readyz", lambda: http_ok(f"http://127.0.0.1:{right_port}/readyz"), 60)
    finally:
        right.stop()
    right_log = right.log_path.read_text()
    assert "service starting" in right_log
    assert ADMIN_PASSWORD not in right_log  # the start-up line shows the settings, the password masked
    wrong_password = "wrong-pw-plugh"
    wrong = ServerProcess(
        "executor-wrong",
        [sys.executable, "-m", "tradebot.cli", "executor"],
        tmp_path,
        env=_service_env(secure_kafka, redis_server, wrong_password, wrong_port),
    )
    try:
        eventually("the executor to give up", lambda: not wrong.running, 60)
        assert not http_ok(f"http://127.0.0.1:{wrong_port}/readyz")
    finally:
        wrong.stop()
    assert wrong.popen.returncode != 0
    log = wrong.log_path.read_text()
    (failure,) = [
        record
        for record in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
        if record.get("message") == "main failed"
    ]
    assert "Kafka refused the connection" in failure["error"]
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in failure["error"]
    assert "TRADEBOT_KAFKA_SASL_PASSWORD" in failure["error"]
    assert wrong_password not in log
