"""The notifier (issue 16.8) on real Kafka and Redis, posting to an HTTP server of the test's own: each sink
kind's payload, per-strategy and per-event filters, retries with backoff (and 429's Retry-After), giving up
without holding the other sinks, and no repeat after a crash between a delivery and its commit."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from tests.adapters._wrapped_bus import WrappedBus, WrappedConsumer
from tests.plugins.servers import KafkaBroker, RedisServer
from tests.plugins.webhooks import Receiver
from tests.services.test_broker import order
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import Bus, Consumer
from tradebot.adapters.connect import Wiring
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.topics import COMMANDS, CONTROL, FILLS, ExitCommand, HaltCommand, pipeline_topics
from tradebot.core.costs import Costs
from tradebot.core.models import OrderReason, Side
from tradebot.executor.broker import PaperBroker
from tradebot.kit.health import Readiness
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.notifier.command import NotifierSettings, run_notifier
from tradebot.notifier.runner import NotifierMetrics, NotifierRunner, Retry
from tradebot.notifier.sinks import SinkConfig

NOW = datetime(2024, 1, 2, tzinfo=UTC)
BOT_TOKEN = "123456:ABC-secret"


@dataclass
class Pipeline:
    """The session's Kafka and Redis, a store prefix and strategy ids of this test's own (the topics hold
    other tests' events: every sink here filters on this test's strategies)."""

    bus: KafkaBus
    store: RedisStore
    a: str
    b: str
    group: str
    broker: PaperBroker = field(default_factory=lambda: PaperBroker(Costs()))
    n: int = 0

    def fill(self, strategy: str, reason: OrderReason = OrderReason.ENTRY_LONG) -> str:
        """A fill record on `fills` as the executor writes it; returns its order id."""
        self.n += 1
        side = Side.BUY if reason is OrderReason.ENTRY_LONG else Side.SELL
        record = self.broker.execute(
            order(side, 10, 100.0, reason, self.n, strategy), now=NOW, halted=False, last_price=None
        )
        assert record is not None
        self._send(FILLS, record.model_dump_json().encode(), b"AAA")
        return record.order.id

    def halt(self, strategy: str, halted: bool = True) -> None:
        command = HaltCommand(strategy_id=strategy, halted=halted)
        self._send(CONTROL, command.model_dump_json().encode(), command.key())

    def close_all(self, strategy: str, command_id: str) -> None:
        command = ExitCommand(command_id=command_id, strategy_id=strategy, ts=NOW)
        self._send(COMMANDS, command.model_dump_json().encode(), command.key())

    def _send(self, topic: str, value: bytes, key: bytes) -> None:
        producer = self.bus.producer("test-notifier")
        producer.produce(topic, value, key=key)
        producer.flush()
        producer.close()


@pytest.fixture
async def pipeline(kafka: KafkaBroker, redis_server: RedisServer) -> AsyncIterator[Pipeline]:
    bus = KafkaBus(kafka.bootstrap)
    await asyncio.to_thread(bus.ensure_topics, pipeline_topics(1))
    tag = uuid.uuid4().hex[:8]
    store = RedisStore(redis_server.url, prefix=f"notify-{tag}")
    try:
        yield Pipeline(bus, store, f"a{tag}", f"b{tag}", f"notifier-{tag}")
    finally:
        await store.close()
        bus.close()


FAST = Retry(attempts=4, initial_s=0.1, max_s=0.4, retry_after_max_s=5.0, timeout_s=5.0)


@dataclass
class Running:
    runner: NotifierRunner
    registry: CollectorRegistry
    task: asyncio.Task[None]
    shutdown: ShutdownEvent

    def metric(self, name: str, sink: str) -> float:
        value = self.registry.get_sample_value(
            f"tradebot_notifier_{name}_total", {"sink": sink, "kind": _kinds[sink]}
        )
        return value or 0.0

    async def stop(self) -> None:
        self.shutdown.set()
        await self.task


_kinds: dict[str, str] = {}


async def start(pipeline: Pipeline, sinks: list[SinkConfig], bus: Bus | None = None) -> Running:
    _kinds.update({sink.name: sink.kind for sink in sinks})
    registry = CollectorRegistry()
    runner = NotifierRunner(
        bus=bus or pipeline.bus,
        store=pipeline.store,
        sinks=sinks,
        metrics=NotifierMetrics(registry),
        retry=FAST,
        group_id=pipeline.group,
        start="earliest",
        poll_timeout_s=0.05,
    )
    shutdown = ShutdownEvent()
    running = Running(runner, registry, asyncio.create_task(runner.run(shutdown)), shutdown)
    await until("the notifier's partitions", lambda: runner.ready, within_s=30)
    return running


def sink(
    name: str, kind: Literal["webhook", "slack", "discord", "telegram"], url: str, **more: Any
) -> SinkConfig:
    secrets = {"url": SecretStr(url)} | (
        {"bot_token": SecretStr(more.pop("bot_token"))} if "bot_token" in more else {}
    )
    return SinkConfig(name=name, kind=kind, **secrets, **more)


async def test_each_kind_of_sink_gets_its_own_payload(
    pipeline: Pipeline, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    only = [pipeline.a]
    sinks = [
        sink("hook", "webhook", receiver.url("/hook"), strategies=only),
        sink("slack", "slack", receiver.url("/slack"), strategies=only),
        sink("discord", "discord", receiver.url("/discord"), strategies=only),
        sink("tg", "telegram", receiver.url("/tg"), bot_token=BOT_TOKEN, chat_id="-10042", strategies=only),
    ]
    running = await start(pipeline, sinks)
    try:
        order_id = pipeline.fill(pipeline.a)
        pipeline.halt(pipeline.a)
        pipeline.close_all(pipeline.a, "cmd-1")
        await until(
            "three events at each sink",
            lambda: all(
                len(receiver.to(p)) == 3
                for p in ("/hook", "/slack", "/discord", f"/tg/bot{BOT_TOKEN}/sendMessage")
            ),
            within_s=30,
        )
    finally:
        await running.stop()
    hooks = receiver.to("/hook")
    assert [(h.body["kind"], h.body["id"]) for h in hooks] == [
        ("entry", f"fill:{order_id}"),
        ("halt", hooks[1].body["id"]),
        ("force-exit-request", "command:cmd-1"),
    ]
    assert hooks[1].body["id"].startswith("control:")
    # The generic webhook: the whole event, its id as the idempotency key.
    assert all(h.headers["idempotency-key"] == h.body["id"] for h in hooks)
    entry = hooks[0].body
    assert (entry["strategy_id"], entry["symbol"], entry["topic"]) == (pipeline.a, "AAA", "fills")
    assert (entry["data"]["fill"]["order_id"], entry["data"]["fill"]["status"]) == (order_id, "filled")
    assert entry["schema_version"] == 1
    texts = [h.body["text"] for h in hooks]
    assert texts[0].startswith(f"[{pipeline.a}] AAA entry_long: buy 10")
    assert texts[1] == f"[{pipeline.a}] halted: no new entries"
    assert texts[2] == f"[{pipeline.a}] close-all requested (command cmd-1)"
    # Slack's and Discord's incoming webhooks, Telegram's sendMessage: the same line of text each.
    assert [r.body for r in receiver.to("/slack")] == [{"text": t} for t in texts]
    assert [r.body for r in receiver.to("/discord")] == [{"content": t} for t in texts]
    assert [r.body for r in receiver.to(f"/tg/bot{BOT_TOKEN}/sendMessage")] == [
        {"chat_id": "-10042", "text": t} for t in texts
    ]
    assert running.metric("sent", "tg") == 3
    # The sinks' URLs and the bot token are secrets: in no log record (httpx logs each request's URL).
    logged = "\n".join(str(vars(record)) for record in caplog.records)
    assert "notification sent" in logged
    assert BOT_TOKEN not in logged
    assert "/slack" not in logged


async def test_sinks_get_only_the_strategies_and_kinds_they_ask_for(
    pipeline: Pipeline, receiver: Receiver
) -> None:
    a, b = pipeline.a, pipeline.b
    sinks = [
        sink("only-a", "slack", receiver.url("/only-a"), strategies=[a]),
        sink("both", "slack", receiver.url("/both"), strategies=[a, b]),
        sink("halts", "slack", receiver.url("/halts"), strategies=[a, b], events=["halt", "stop-out"]),
    ]
    running = await start(pipeline, sinks)
    try:
        pipeline.fill(a)
        pipeline.fill(b)
        pipeline.halt(b)
        pipeline.fill(a, OrderReason.STOP_LOSS)
        await until("four events for both", lambda: len(receiver.to("/both")) == 4, within_s=30)
        await asyncio.sleep(0.5)  # anything wrongly sent elsewhere would be in by now
    finally:
        await running.stop()

    def texts(path: str) -> list[str]:
        return [r.body["text"] for r in receiver.to(path)]

    assert [t.split("]")[0] for t in texts("/only-a")] == [f"[{a}", f"[{a}"]
    assert [t.split("]")[0] for t in texts("/both")] == [f"[{a}", f"[{b}", f"[{b}", f"[{a}"]
    assert texts("/halts") == [f"[{b}] halted: no new entries", texts("/both")[3]]
    assert "stop_loss" in texts("/halts")[1]


async def test_a_failing_sink_is_retried_with_backoff_then_given_up_without_holding_the_others(
    pipeline: Pipeline, receiver: Receiver
) -> None:
    receiver.script["/flaky"] = [(500, {}), (503, {})]  # then 200
    receiver.script["/down"] = [(500, {})] * 10
    receiver.script["/refuses"] = [(400, {})]
    only = [pipeline.a]
    sinks = [
        sink("flaky", "webhook", receiver.url("/flaky"), strategies=only),
        sink("down", "discord", receiver.url("/down"), strategies=only),
        sink("refuses", "slack", receiver.url("/refuses"), strategies=only),
        sink("fine", "slack", receiver.url("/fine"), strategies=only),
    ]
    running = await start(pipeline, sinks)
    try:
        pipeline.fill(pipeline.a)
        await until("the down sink given up", lambda: running.metric("failed", "down") == 1, within_s=30)
        pipeline.halt(pipeline.a)  # the next event flows once the first is done with
        await until("the next event", lambda: len(receiver.to("/fine")) == 2, within_s=30)
    finally:
        await running.stop()
    flaky = receiver.to("/flaky")
    assert [r.status for r in flaky] == [500, 503, 200, 200]
    assert len(receiver.answered("/flaky")) == 2  # one success per event: the retries sent it once
    assert flaky[0].body["id"] == flaky[1].body["id"] == flaky[2].body["id"] != flaky[3].body["id"]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(flaky[:3])]
    assert gaps[0] >= FAST.backoff(1) * 0.9, gaps  # 0.1 s
    assert gaps[1] >= FAST.backoff(2) * 0.9, gaps  # then 0.2 s
    assert (running.metric("retried", "flaky"), running.metric("sent", "flaky")) == (2, 2)
    # Down: every attempt used on the fill, then given up (the halt's attempts may be under way).
    down = receiver.to("/down")
    assert len({r.body["content"] for r in down[: FAST.attempts]}) == 1
    assert len(down) >= FAST.attempts
    assert running.metric("failed", "down") >= 1
    # A 400 will not get better: given up at once.
    assert [r.status for r in receiver.to("/refuses")][:1] == [400]
    assert running.metric("retried", "refuses") == 0
    # The healthy sink had the fill at once, not after the others' retries.
    assert receiver.to("/fine")[0].at < flaky[2].at


async def test_a_429_waits_as_long_as_retry_after_asks(pipeline: Pipeline, receiver: Receiver) -> None:
    receiver.script["/limited"] = [(429, {"Retry-After": "1"})]
    running = await start(
        pipeline, [sink("limited", "slack", receiver.url("/limited"), strategies=[pipeline.a])]
    )
    try:
        pipeline.halt(pipeline.a)
        await until("the retry", lambda: len(receiver.to("/limited")) == 2, within_s=30)
    finally:
        await running.stop()
    first, second = receiver.to("/limited")
    assert (first.status, second.status) == (429, 200)
    # Retry-After (1 s), not the 0.1 s backoff.
    assert second.at - first.at >= 0.95
    assert (running.metric("retried", "limited"), running.metric("sent", "limited")) == (1, 1)


class NoCommitBus(WrappedBus):
    """Consumers that never commit: a notifier killed right after delivering, before its commit."""

    def consumer(self, group_id: str, topics: Sequence[str], **options: Any) -> Consumer:
        return NoCommit(super().consumer(group_id, topics, **options))


class NoCommit(WrappedConsumer):
    def commit(self) -> None:
        pass


async def test_no_repeat_after_a_crash_between_delivery_and_commit(
    pipeline: Pipeline, receiver: Receiver
) -> None:
    sinks = [
        sink("hook", "webhook", receiver.url("/hook"), strategies=[pipeline.a]),
        sink(
            "tg", "telegram", receiver.url("/tg"), bot_token=BOT_TOKEN, chat_id="7", strategies=[pipeline.a]
        ),
    ]
    telegram = f"/tg/bot{BOT_TOKEN}/sendMessage"
    first = await start(pipeline, sinks, bus=NoCommitBus(pipeline.bus))
    pipeline.halt(pipeline.a)
    await until(
        "the halt delivered",
        lambda: len(receiver.to("/hook")) == len(receiver.to(telegram)) == 1,
        within_s=30,
    )
    # Killed once both deliveries are marked (a kill between a sink's answer and its mark is the one window
    # left to the webhook's Idempotency-Key), before any commit: nothing committed, nothing graceful.
    halt_id = receiver.to("/hook")[0].body["id"]
    for _ in range(200):
        marks = [await pipeline.store.was_delivered(f"{name}|{halt_id}") for name in ("hook", "tg")]
        if all(marks):
            break
        await asyncio.sleep(0.05)
    assert all(marks)
    first.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first.task
    pipeline.halt(pipeline.a, halted=False)  # sent while no notifier runs
    second = await start(pipeline, sinks)
    try:
        await until("the resume delivered", lambda: len(receiver.to("/hook")) == 2, within_s=30)
        await until("the telegram resume", lambda: len(receiver.to(telegram)) == 2, within_s=30)
        await asyncio.sleep(0.5)
    finally:
        await second.stop()
    # The halt was read again (never committed) and found delivered: not sent twice.
    assert [r.body["kind"] for r in receiver.to("/hook")] == ["halt", "resume"]
    assert [r.body["text"].split("] ")[1] for r in receiver.to(telegram)] == [
        "halted: no new entries",
        "resumed",
    ]
    assert (second.metric("duplicate", "hook"), second.metric("duplicate", "tg")) == (1, 1)
    # A third start, after the second committed: nothing read again at all.
    third = await start(pipeline, sinks)
    await asyncio.sleep(1.0)
    await third.stop()
    assert len(receiver.to("/hook")) == 2
    assert third.metric("duplicate", "hook") == 0


async def test_embedded_over_the_memory_bus_and_store(receiver: Receiver) -> None:
    """What `tradebot up --embedded` runs: the service's own `run_notifier` over the in-memory bus and store,
    its readiness check joining the process's."""
    bus, store, readiness, shutdown = MemoryBus(), MemoryStore(), Readiness(), ShutdownEvent()
    bus.ensure_topics(pipeline_topics(1))
    sinks = [sink("ops", "discord", receiver.url("/ops"))]
    settings = NotifierSettings(notifier_sinks=sinks)
    task = asyncio.create_task(
        run_notifier(settings, Wiring(bus, store, CollectorRegistry(), readiness, shutdown))
    )
    try:
        for _ in range(200):
            report = await readiness.evaluate()
            if report.ready and report.checks:
                break
            await asyncio.sleep(0.05)
        assert report.checks == {"notifier": True}
        producer = bus.producer("test")
        halt = HaltCommand(strategy_id="s1", halted=True)
        producer.produce(CONTROL, halt.model_dump_json().encode(), key=halt.key())
        producer.flush()
        await until("the halt at the sink", lambda: len(receiver.to("/ops")) == 1, within_s=10)
    finally:
        shutdown.set()
        await task
    assert receiver.to("/ops")[0].body == {"content": "[s1] halted: no new entries"}
    assert await store.was_delivered("ops|control:0:0")
