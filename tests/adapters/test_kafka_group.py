"""A consumer group after one of its members is killed: its partitions move within the session timeout
(`TRADEBOT_KAFKA_SESSION_TIMEOUT_MS`, 10 s), not librdkafka's 45 s, so a killed strategy's restart resumes in
seconds."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from pydantic import ValidationError

from tests.plugins.servers import KafkaBroker
from tradebot.adapters.bus import DEFAULT_SESSION_TIMEOUT_MS, TopicSpec
from tradebot.adapters.connect import PipelineSettings
from tradebot.adapters.kafka import KafkaBus

# A member of `group` that reads `topic` until it is killed, printing "assigned" once it holds partitions.
_MEMBER = textwrap.dedent(
    """
    import sys
    from tradebot.adapters.kafka import KafkaBus

    bootstrap, group, topic = sys.argv[1:]
    consumer = KafkaBus(bootstrap).consumer(group, [topic])
    said = False
    while True:
        consumer.poll(timeout=0.2)
        if consumer.assignment() and not said:
            print("assigned", flush=True)
            said = True
    """
)


def test_a_killed_members_partitions_move_within_the_session_timeout(kafka: KafkaBroker) -> None:
    topic, group = f"group-{uuid.uuid4().hex[:10]}", f"group-{uuid.uuid4().hex[:10]}"
    bus = KafkaBus(kafka.bootstrap)
    bus.ensure_topics([TopicSpec(topic, partitions=1)])
    member = subprocess.Popen(
        [sys.executable, "-c", _MEMBER, kafka.bootstrap, group, topic], stdout=subprocess.PIPE, text=True
    )
    try:
        assert member.stdout is not None
        assert member.stdout.readline().strip() == "assigned"
    finally:
        member.send_signal(signal.SIGKILL)  # no LeaveGroup: only the session timeout frees its partition
        member.wait()
    killed = time.monotonic()
    producer = bus.producer("group-test")
    producer.produce(topic, b"after the kill")
    producer.flush()
    successor = bus.consumer(group, [topic])
    try:
        seen: list[bytes] = []
        while not seen and time.monotonic() - killed < 40:
            seen = [record.value for record in successor.poll(timeout=0.5)]
        waited = time.monotonic() - killed
    finally:
        successor.close()
    assert seen == [b"after the kill"]
    # The group waited for the dead member's session to expire; librdkafka's default (45 s) would not fit.
    assert waited < DEFAULT_SESSION_TIMEOUT_MS / 1000 + 10, f"the successor read after {waited:.1f} s"


@pytest.mark.parametrize("value", ["5999", "1800001"])
def test_a_session_timeout_the_brokers_refuse_is_refused_at_start(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEBOT_KAFKA_SESSION_TIMEOUT_MS", value)
    with pytest.raises(ValidationError, match="kafka_session_timeout_ms"):
        PipelineSettings()
