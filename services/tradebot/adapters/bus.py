"""The message bus contract: topics with partitions, consumer groups, idempotent producers and
transactions (consume-transform-produce with offsets committed in the transaction).

Synchronous and thread-safe per object, like confluent-kafka itself: services run their bus loop in
a worker thread. `KafkaBus` (adapters/kafka.py) is the real thing; `MemoryBus` (adapters/memory_bus.py)
gives the same semantics inside one process for `tradebot up --embedded` and fast tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from tradebot.core.errors import TradebotError

# How long a broker holds a fetch that finds nothing new. For a read_committed reader, records become
# readable when their transaction's markers land, which does not wake a waiting fetch: a hop in the live
# path would wait this long for what just committed (at Kafka's 500 ms default, every hop did). Each idle
# reader then asks about 1000 / this times a second, so readers nobody waits on ask less often.
LOW_LATENCY_FETCH_WAIT_MS = 5
PROJECTION_FETCH_WAIT_MS = 100

# How long a group member that stopped heartbeating (a killed pod) keeps its partitions before the group gives them
# to the others or to its restarted self. librdkafka's default is 45 s, Kafka's own before 3.0 was 10 s: a
# strategy killed mid-stream then resumes within seconds. The heartbeats come from librdkafka's own thread,
# so a busy Python process does not miss them.
DEFAULT_SESSION_TIMEOUT_MS = 10_000


class BusError(TradebotError):
    """A bus operation failed. From Kafka it keeps the broker's error: `code` (a `KafkaError` code), `name`
    (e.g. `NOT_COORDINATOR`), `retriable` (the same call may succeed later) and `requires_abort` (the open
    transaction must be aborted; the batch can then be retried)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        name: str | None = None,
        retriable: bool = False,
        requires_abort: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.retriable = retriable
        self.requires_abort = requires_abort


class FencedError(BusError):
    """Another producer with the same transactional id took over: this instance must stop."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    retention_ms: int | None = None  # None: the broker default
    compacted: bool = False
    # How often the active segment rolls (None: the broker default, 7 days): a compacted topic is compacted
    # only up to its active segment, so this bounds what a reader still finds uncompacted.
    segment_ms: int | None = None


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


class Consumer(Protocol):
    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        """The next records of the assigned partitions (empty after `timeout` seconds)."""

    def commit(self) -> None:
        """Commits the current positions (what has been returned by `poll`) for the group."""

    def assignment(self) -> list[tuple[str, int]]:
        """(topic, partition) pairs currently assigned to this consumer."""

    def group_metadata(self) -> object:
        """This member of its group as a transaction needs it to commit offsets for the group (Kafka's
        `ConsumerGroupMetadata`; opaque): see `ConsumedOffsets`."""

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet consumed, per assigned (topic, partition), as last known; a partition whose
        end is not known yet is absent. Cheap: no broker round trip."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ConsumedOffsets:
    """The input side of a consume-transform-produce transaction: the consumer's group (its
    `group_metadata()`) and the next offset to read per (topic, partition). Committed in the transaction,
    the group resumes right after the records the transaction's output was made from, or, aborted, at
    them again."""

    group: object
    offsets: Mapping[tuple[str, int], int]

    @classmethod
    def after(cls, consumer: Consumer, records: Sequence[Record]) -> ConsumedOffsets:
        """The offsets that follow `records` (what `consumer` returned) in each of their partitions."""
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            tp = (record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        return cls(consumer.group_metadata(), offsets)


class Producer(Protocol):
    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        """Queues a record; the partition is chosen by key (murmur2, as Kafka's default) when not given."""

    def flush(self, timeout: float = 30.0) -> None:
        """Waits until every queued record is acknowledged; raises BusError when one failed."""

    def poll(self, timeout: float = 0.0) -> int:
        """Serves delivery reports for up to `timeout` seconds; returns how many records are queued and not
        yet acknowledged (what a caller bounds to apply backpressure)."""

    def close(self) -> None: ...


class TransactionalProducer(Producer, Protocol):
    def begin(self) -> None: ...

    def commit(self, consumed: ConsumedOffsets | None = None) -> None:
        """Commits the transaction; with `consumed`, those offsets are committed for their group in it
        (`send_offsets_to_transaction`), so output and input progress become visible together."""

    def abort(self) -> None: ...


class Bus(Protocol):
    def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Creates missing topics (idempotent); existing ones are left as they are."""

    def producer(self, client_id: str, *, linger_ms: int = 1) -> Producer:
        """An idempotent producer (no duplicates on retries, order kept per partition). It sends what it
        was given after at most `linger_ms` (Kafka's batching: longer sends fewer, larger requests)."""

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        """A transactional producer; a new one with the same id fences the old one."""

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        read_committed: bool = True,
        start: Literal["earliest", "latest"] = "earliest",
        fetch_wait_ms: int = LOW_LATENCY_FETCH_WAIT_MS,
    ) -> Consumer:
        """A group member; manual commits only. Without a committed offset it starts at `start`.
        `fetch_wait_ms` bounds how long a committed record can wait unseen (see `LOW_LATENCY_FETCH_WAIT_MS`);
        a reader nobody waits on (a projection for people) asks less often with a longer one."""

    def read_all(self, topic: str, *, read_committed: bool = True, timeout: float = 10.0) -> list[Record]:
        """Every record of `topic` from the beginning to its current end, partition by partition
        (no group, nothing committed): for rebuilding state and for tests."""

    def scan(
        self, topic: str, *, last: int | None = None, read_committed: bool = True, timeout: float = 10.0
    ) -> Iterator[list[Record]]:
        """`read_all` in batches, without holding the topic: from each partition's beginning, or from its
        last `last` offsets (a tail; transaction markers take offsets too), to its end when called; each
        partition's records in order. `timeout` bounds the whole scan."""

    def close(self) -> None:
        """Releases what the bus itself holds; afterwards every call raises BusError. The producers and
        consumers it made are closed by whoever holds them."""
