"""The transactional loop, over KafkaBus (a real broker) and MemoryBus alike: fence, then rebuild, then
consume, at start and after an abort; an aborted batch leaves no trace in the output nor in the rebuilt
state; a fenced instance stops; a bug in the processor reaches the caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.adapters._wrapped_bus import WrappedBus, WrappedConsumer
from tests.services.test_executor_metrics import until
from tradebot.adapters.bus import (
    Bus,
    BusError,
    Consumer,
    Producer,
    Record,
    TopicSpec,
    TransactionalProducer,
)
from tradebot.adapters.transactional import TransactionalLoop
from tradebot.kit.lifecycle import ShutdownEvent

Names = Callable[[str], str]


class RecordingBus(WrappedBus):
    """A bus that notes when a transactional producer is made (fencing) and a consumer joins."""

    def __init__(self, inner: Bus, events: list[str]) -> None:
        super().__init__(inner)
        self.events = events

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        self.events.append("fence")
        return self.inner.transactional_producer(transactional_id)

    def consumer(self, group_id: str, topics: Sequence[str], **options: Any) -> Consumer:
        self.events.append("consume")
        return super().consumer(group_id, topics, **options)


class Echo:
    """Copies each input to `sink`; its state is everything it has output, rebuilt from the sink. Fails
    (as the bus would) once on `fail_on`, after producing part of the batch."""

    def __init__(self, bus: Bus, sink: str, events: list[str], fail_on: bytes | None = None) -> None:
        self.bus = bus
        self.sink = sink
        self.events = events
        self.fail_on = fail_on
        self.state: list[bytes] = []

    def rebuild(self) -> None:
        self.events.append("rebuild")
        self.state = [record.value for record in self.bus.read_all(self.sink)]

    def process_batch(self, records: list[Record], producer: Producer) -> None:
        for record in records:
            out = b"out:" + record.value
            producer.produce(self.sink, out)
            self.state.append(out)
            if record.value == self.fail_on:
                self.fail_on = None
                producer.flush()  # the aborted record really reaches the log
                raise BusError("simulated: coordinator lost", retriable=True, requires_abort=True)

    def committed(self) -> None:
        self.events.append("commit")

    def aborted(self, error: BusError) -> None:
        assert error.retriable
        self.events.append("abort")


def produce_inputs(bus: Bus, topic: str, values: list[bytes]) -> None:
    producer = bus.producer("inputs")
    for value in values:
        producer.produce(topic, value)
    producer.flush()
    producer.close()


def loop_over(bus: Bus, processor: Echo, group: str, source: str, batch_max: int) -> TransactionalLoop:
    return TransactionalLoop(
        bus, processor, group=group, topics=[source], batch_max=batch_max, poll_timeout_s=0.05
    )


def outputs(bus: Bus, sink: str) -> list[bytes]:
    return [record.value for record in bus.read_all(sink)]


async def test_fence_then_rebuild_then_consume_and_an_abort_rewinds(bus: Bus, names: Names) -> None:
    source, sink = names("loop-in"), names("loop-out")
    bus.ensure_topics([TopicSpec(source), TopicSpec(sink)])
    inputs = [f"in{i}".encode() for i in range(10)]
    produce_inputs(bus, source, inputs)
    events: list[str] = []
    echo = Echo(bus, sink, events, fail_on=b"in5")
    loop = loop_over(RecordingBus(bus, events), echo, names("group"), source, batch_max=3)
    shutdown = ShutdownEvent()
    task = asyncio.create_task(loop.run(shutdown))
    try:
        await until("every input out", lambda: len(outputs(bus, sink)) >= len(inputs), within_s=60.0)
    finally:
        shutdown.set()
        await task
    expected = [b"out:" + value for value in inputs]
    assert outputs(bus, sink) == expected  # the aborted batch's records are invisible, none is doubled
    assert b"out:in5" in [record.value for record in bus.read_all(sink, read_committed=False)][:7]
    assert echo.state == expected  # rebuilt without the aborted batch's effects
    assert events[:3] == ["fence", "rebuild", "consume"]
    abort = events.index("abort")
    assert events[abort : abort + 4] == ["abort", "fence", "rebuild", "consume"]
    assert "abort" not in events[abort + 1 :]
    assert not loop.ready


async def test_a_fenced_instance_stops_and_commits_nothing(bus: Bus, names: Names) -> None:
    source, sink, group = names("fenced-in"), names("fenced-out"), names("group")
    bus.ensure_topics([TopicSpec(source), TopicSpec(sink)])
    produce_inputs(bus, source, [b"first"])
    loop = TransactionalLoop(
        bus, Echo(bus, sink, []), group=group, topics=[source], batch_max=10, poll_timeout_s=0.05
    )
    shutdown = ShutdownEvent()
    task = asyncio.create_task(loop.run(shutdown))
    try:
        await until("the first batch", lambda: outputs(bus, sink) == [b"out:first"], within_s=60.0)
        successor = bus.transactional_producer(group)  # a new instance starts: it fences this one
        produce_inputs(bus, source, [b"second"])
        await asyncio.wait_for(task, 30.0)
    finally:
        shutdown.set()
        await asyncio.gather(task, return_exceptions=True)
    assert shutdown.reason == "fenced"
    successor.close()
    assert outputs(bus, sink) == [b"out:first"]


async def test_a_bug_in_the_processor_reaches_the_caller(bus: Bus, names: Names) -> None:
    source, sink = names("bug-in"), names("bug-out")
    bus.ensure_topics([TopicSpec(source), TopicSpec(sink)])
    produce_inputs(bus, source, [b"x"])

    class Buggy(Echo):
        def process_batch(self, records: list[Record], producer: Producer) -> None:
            super().process_batch(records, producer)
            raise ZeroDivisionError("a bug")

    loop = TransactionalLoop(
        bus, Buggy(bus, sink, []), group=names("group"), topics=[source], batch_max=10, poll_timeout_s=0.05
    )
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(loop.run(ShutdownEvent()), 30.0)
    assert outputs(bus, sink) == []
    assert not loop.ready


class ThreadNotingBus(WrappedBus):
    """Notes the thread of every poll that returned records; fails a poll on demand."""

    def __init__(self, inner: Bus, polls: list[int], fail_polls: list[BusError]) -> None:
        super().__init__(inner)
        self.polls = polls
        self.fail_polls = fail_polls

    def consumer(self, group_id: str, topics: Sequence[str], **options: Any) -> Consumer:
        bus = self

        class Noting(WrappedConsumer):
            def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
                if bus.fail_polls:
                    raise bus.fail_polls.pop()
                records = super().poll(timeout, max_records)
                if records:
                    bus.polls.append(threading.get_ident())
                return records

        return Noting(super().consumer(group_id, topics, **options))


async def test_a_batch_is_polled_processed_and_committed_in_one_trip_to_a_thread(
    bus: Bus, names: Names
) -> None:
    """On a busy host every hand-over between the event loop and a worker thread waits for a CPU: the poll
    that brings a batch, its processing and its commit happen on one thread, in one trip. A bus error of
    the poll itself still reaches the caller (it is not a transaction to abort)."""
    source, sink = names("trip-in"), names("trip-out")
    bus.ensure_topics([TopicSpec(source), TopicSpec(sink)])
    inputs = [f"in{i}".encode() for i in range(9)]
    produce_inputs(bus, source, inputs)
    polls: list[int] = []
    processed: list[int] = []

    class Noting(Echo):
        def process_batch(self, records: list[Record], producer: Producer) -> None:
            processed.append(threading.get_ident())
            super().process_batch(records, producer)

    fail_polls: list[BusError] = []
    loop = loop_over(
        ThreadNotingBus(bus, polls, fail_polls), Noting(bus, sink, []), names("group"), source, 2
    )
    shutdown = ShutdownEvent()
    task = asyncio.create_task(loop.run(shutdown))
    try:
        await until("every input out", lambda: len(outputs(bus, sink)) >= len(inputs), within_s=60.0)
        assert len(processed) >= 5
        assert polls == processed  # each batch: its poll and its processing on the same thread
        fail_polls.append(BusError("simulated: the consumer failed", retriable=False))
        with pytest.raises(BusError, match="the consumer failed"):
            await asyncio.wait_for(asyncio.shield(task), 30.0)
    finally:
        shutdown.set()
        await asyncio.gather(task, return_exceptions=True)
    assert outputs(bus, sink) == [b"out:" + value for value in inputs]
