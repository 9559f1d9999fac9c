"""The exactly-once loop: consume a batch, process it, produce and commit its output and offsets in one
Kafka transaction, or abort and start again from the last commit. The strategy and the executor supply
only a `BatchProcessor`; the loop owns begin, commit, abort, rewind and the order of start-up.

The order is **fence, then rebuild, then consume**, at start and after every abort:

1. *fence*: a new transactional producer (`init_transactions`) fences any earlier one with the same
   transactional id, the previous pod of a rolling update included, and aborts what it left open; from
   then on nothing more can be committed behind this instance's back;
2. *rebuild*: the processor reads its state back from what the bus has committed (the executor its book
   from `fills`, the strategy its last snapshot from `strategy-state`), which now includes everything
   the fenced instance committed, and, after an abort, excludes what the aborted batch did;
3. *consume*: a new consumer of the group resumes at the committed offsets, which describe the same
   point as the rebuilt state because both were committed in the same transactions.

Rebuilding before fencing would leave a window in which the old instance commits what the new one never
reads. Like Quix Streams' checkpoints, a batch's offsets are the records it processed (not the
consumer's position), sent with the consumer's group metadata: the producer never looks inside the
consumer. A fenced instance stops (the shutdown event is set with reason "fenced"); any other bus error
aborts and rewinds; anything else is a bug and propagates to the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from tradebot.adapters.bus import (
    Bus,
    BusError,
    ConsumedOffsets,
    Consumer,
    FencedError,
    Producer,
    Record,
    TransactionalProducer,
)
from tradebot.core.errors import TradebotError
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.kit.metrics import ConsumerLagGauge

logger = logging.getLogger(__name__)


class _TransactionFailedError(TradebotError):
    """A batch's transaction failed with `error` (the poll before it did not): carries it out of the
    worker thread to the loop, which aborts and rewinds."""

    def __init__(self, error: BusError) -> None:
        super().__init__(str(error))
        self.error = error
        self.retriable = error.retriable


class BatchProcessor(Protocol):
    """What a consume-process-produce service gives `TransactionalLoop`. Called from a worker thread."""

    def rebuild(self) -> None:
        """Sets the state to what the bus has committed; called after fencing, before consuming: at
        start and after every aborted transaction (the state may hold the aborted batch's effects)."""

    def process_batch(self, records: list[Record], producer: Producer) -> None:
        """Produces what `records` cause into the open transaction; never begins or commits it."""

    def committed(self) -> None:
        """The batch's transaction committed (count it, publish what it changed)."""

    def aborted(self, error: BusError) -> None:
        """The batch's transaction was aborted; `rebuild` follows."""


class TransactionalLoop:
    """Runs `processor` over `topics` as consumer group and transactional id `group`."""

    def __init__(
        self,
        bus: Bus,
        processor: BatchProcessor,
        *,
        group: str,
        topics: Sequence[str],
        batch_max: int,
        poll_timeout_s: float,
        lag: ConsumerLagGauge | None = None,
        idle_due: Callable[[], bool] | None = None,
    ) -> None:
        self.bus = bus
        self.processor = processor
        self.group = group
        self.topics = list(topics)
        self.batch_max = batch_max
        self.poll_timeout_s = poll_timeout_s
        self.lag = lag
        # Asked after an empty poll: True runs an empty batch (the strategy's bars due on the clock).
        self.idle_due = idle_due
        self.ready = False  # fenced, rebuilt and consuming

    async def run(self, shutdown: ShutdownEvent) -> None:
        producer, consumer = await asyncio.to_thread(self._start)
        self.ready = True
        try:
            while not shutdown.is_set():
                try:
                    await asyncio.to_thread(self._poll_and_commit, producer, consumer)
                except _TransactionFailedError as failed:
                    exc = failed.error
                    if isinstance(exc, FencedError):
                        logger.error(
                            "another instance took over; stopping",
                            extra={"group": self.group, "error": str(exc), "code": exc.name},
                        )
                        shutdown.set("fenced")
                        continue
                    logger.warning(
                        "transaction aborted; resuming from the last commit",
                        extra={
                            "group": self.group,
                            "error": str(exc),
                            "code": exc.name,
                            "retriable": exc.retriable,
                        },
                    )
                    self.processor.aborted(exc)
                    self.ready = False
                    await asyncio.to_thread(self._discard, producer, consumer)
                    producer, consumer = await asyncio.to_thread(self._start)
                    self.ready = True
                    continue
                if self.lag is not None:
                    self.lag.update(self.group, consumer)
        finally:
            self.ready = False
            await asyncio.to_thread(consumer.close)
            await asyncio.to_thread(producer.close)

    def _start(self) -> tuple[TransactionalProducer, Consumer]:
        """Fence, then rebuild, then consume (see the module's docstring for why in this order)."""
        with contextlib.ExitStack() as on_failure:
            producer = self.bus.transactional_producer(self.group)
            on_failure.callback(producer.close)
            self.processor.rebuild()
            consumer = self.bus.consumer(self.group, self.topics, read_committed=True)
            on_failure.pop_all()
        return producer, consumer

    def _poll_and_commit(self, producer: TransactionalProducer, consumer: Consumer) -> None:
        """A poll and, when it brings records (or a batch is due on the clock), their transaction: in one
        trip to a worker thread, because on a busy host each trip waits for a CPU (a poll and a commit
        in trips of their own made four hand-overs a batch instead of two). A bus error of the poll
        propagates; one of the transaction comes as `_TransactionFailedError`, to be aborted and rewound."""
        records = consumer.poll(self.poll_timeout_s, self.batch_max)
        if not records and (self.idle_due is None or not self.idle_due()):
            return
        try:
            self._transaction(records, producer, consumer)
        except BusError as exc:
            raise _TransactionFailedError(exc) from exc

    def _transaction(
        self, records: list[Record], producer: TransactionalProducer, consumer: Consumer
    ) -> None:
        producer.begin()
        self.processor.process_batch(records, producer)
        producer.commit(ConsumedOffsets.after(consumer, records))
        self.processor.committed()

    @staticmethod
    def _discard(producer: TransactionalProducer, consumer: Consumer) -> None:
        """Aborts the open transaction (best effort: the next producer's fencing aborts it anyway) and
        drops both clients; the consumer's successor starts at the committed offsets."""
        with contextlib.suppress(BusError):
            producer.abort()
        producer.close()
        consumer.close()
