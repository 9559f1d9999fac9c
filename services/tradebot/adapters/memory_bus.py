"""The bus in one process: Kafka's semantics (partitions, groups, transactions) without a broker.

One `threading.Condition` guards everything; `poll` waits on it. Records are never removed
(retention and compaction are not modelled). What matches Kafka:

- keyed records land on the partition Kafka's default partitioner picks (murmur2, `toPositive(h) % n`);
  records without a key are spread round-robin;
- offsets are dense per partition (Kafka leaves gaps for transaction markers; nothing should rely on
  either);
- read_committed consumers stop at the first record of a still-open transaction (the last stable
  offset) and skip aborted records; read_uncommitted consumers see every record, including those of
  open and aborted transactions, as in Kafka;
- offsets sent in a transaction are committed with it and discarded on abort;
- a new transactional producer with the same id aborts the old one's open transaction and fences it:
  the old one's next operation raises `FencedError`;
- a group assigns its members the (topic, partition) pairs round-robin in sorted order, and
  rebalances when a member joins or leaves or a subscribed topic appears; a newly assigned partition
  starts at the group's committed offset, else at `start`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tradebot.adapters.bus import (
    LOW_LATENCY_FETCH_WAIT_MS,
    BusError,
    ConsumedOffsets,
    FencedError,
    Record,
    TopicSpec,
)

TP = tuple[str, int]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (the Java client's default partitioner hash), as a signed 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(length // 4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    tail = length & ~3
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key`: `toPositive(murmur2(key)) % n`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(eq=False)
class _Txn:
    state: Literal["open", "committed", "aborted"] = "open"
    offsets: dict[str, dict[TP, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    record: Record
    txn: _Txn | None  # None: written outside a transaction

    def visible(self, read_committed: bool) -> bool | None:
        """True: deliver; False: skip; None: stop here (an open transaction, for read_committed)."""
        if not read_committed or self.txn is None or self.txn.state == "committed":
            return True
        return None if self.txn.state == "open" else False


@dataclass(frozen=True, eq=False)
class MemoryGroupMetadata:
    """A consumer's `group_metadata()`: a transaction commits offsets for `group_id` only while `member`
    is still in the group (Kafka fences a member that left, by its generation)."""

    bus: MemoryBus
    group_id: str
    member: MemoryConsumer


@dataclass
class _Group:
    committed: dict[TP, int] = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)


class MemoryBus:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._topics: dict[str, list[list[_Entry]]] = {}
        self._groups: dict[str, _Group] = {}
        self._txn_epochs: dict[str, int] = {}
        self._open_txns: dict[str, _Txn] = {}
        self._round_robin = itertools.count()
        self._closed = False

    # -- the Bus protocol --------------------------------------------------------------------------

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        with self._cond:
            self._check_open()
            created = False
            for spec in specs:
                if spec.partitions < 1:
                    raise BusError(f"topic {spec.name!r}: partitions must be >= 1")
                if spec.name not in self._topics:
                    self._topics[spec.name] = [[] for _ in range(spec.partitions)]
                    created = True
            if created:
                for group in self._groups.values():
                    self._rebalance(group)
                self._cond.notify_all()

    def producer(self, client_id: str, *, linger_ms: int = 1) -> MemoryProducer:
        del linger_ms  # a produced record is in the topic at once here
        with self._cond:
            self._check_open()
        return MemoryProducer(self, client_id)

    def transactional_producer(self, transactional_id: str) -> MemoryTransactionalProducer:
        with self._cond:
            self._check_open()
            epoch = self._txn_epochs.get(transactional_id, 0) + 1
            self._txn_epochs[transactional_id] = epoch
            stale = self._open_txns.pop(transactional_id, None)
            if stale is not None:
                stale.state = "aborted"
                self._cond.notify_all()
        return MemoryTransactionalProducer(self, transactional_id, epoch)

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        read_committed: bool = True,
        start: Literal["earliest", "latest"] = "earliest",
        fetch_wait_ms: int = LOW_LATENCY_FETCH_WAIT_MS,
    ) -> MemoryConsumer:
        del fetch_wait_ms  # a committed record wakes a waiting poll here
        consumer = MemoryConsumer(self, group_id, list(topics), read_committed=read_committed, start=start)
        with self._cond:
            self._check_open()
            group = self._groups.setdefault(group_id, _Group())
            group.members.append(consumer)
            self._rebalance(group)
            self._cond.notify_all()
        return consumer

    def read_all(self, topic: str, *, read_committed: bool = True, timeout: float = 10.0) -> list[Record]:
        with self._cond:
            self._check_open()
            records: list[Record] = []
            for log in self._partitions(topic):
                for entry in log:
                    visible = entry.visible(read_committed)
                    if visible is None:
                        break
                    if visible:
                        records.append(entry.record)
            return records

    def scan(
        self, topic: str, *, last: int | None = None, read_committed: bool = True, timeout: float = 10.0
    ) -> Iterator[list[Record]]:
        del timeout
        with self._cond:
            self._check_open()
            logs = [list(log) for log in self._partitions(topic)]
        for log in logs:
            start = 0 if last is None else max(len(log) - last, 0)
            batch: list[Record] = []
            for entry in log[start:]:
                visible = entry.visible(read_committed)
                if visible is None:
                    break
                if visible:
                    batch.append(entry.record)
                if len(batch) >= 1000:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- internals (called with the condition held) ------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")

    def _partitions(self, topic: str) -> list[list[_Entry]]:
        try:
            return self._topics[topic]
        except KeyError:
            raise BusError(f"unknown topic {topic!r}") from None

    def _append(
        self, topic: str, value: bytes, key: bytes | None, partition: int | None, txn: _Txn | None
    ) -> None:
        self._check_open()
        logs = self._partitions(topic)
        if partition is None:
            partition = (
                partition_for(key, len(logs)) if key is not None else next(self._round_robin) % len(logs)
            )
        elif not 0 <= partition < len(logs):
            raise BusError(f"topic {topic!r} has no partition {partition}")
        log = logs[partition]
        record = Record(topic, partition, len(log), key, bytes(value), int(time.time() * 1000))
        log.append(_Entry(record, txn))
        self._cond.notify_all()

    def _rebalance(self, group: _Group) -> None:
        wanted = sorted(
            {
                (topic, p)
                for member in group.members
                for topic in member.topics
                if topic in self._topics
                for p in range(len(self._topics[topic]))
            }
        )
        assigned: dict[int, list[TP]] = {id(member): [] for member in group.members}
        for turn, tp in enumerate(wanted):
            eligible = [member for member in group.members if tp[0] in member.topics]
            assigned[id(eligible[turn % len(eligible)])].append(tp)
        for member in group.members:
            member._assign(assigned[id(member)], group.committed)

    def _end_offset(self, tp: TP) -> int:
        return len(self._topics[tp[0]][tp[1]])


class MemoryConsumer:
    def __init__(
        self,
        bus: MemoryBus,
        group_id: str,
        topics: list[str],
        *,
        read_committed: bool,
        start: Literal["earliest", "latest"],
    ) -> None:
        self._bus = bus
        self.group_id = group_id
        self.topics = topics
        self.read_committed = read_committed
        self._start = start
        self._positions: dict[TP, int] = {}  # the assignment, in order, with each partition's position
        self._next = 0  # where the next poll starts among the assigned partitions (fairness)
        self._closed = False

    def _assign(self, tps: list[TP], committed: dict[TP, int]) -> None:
        kept = {tp: self._positions[tp] for tp in tps if tp in self._positions}
        self._positions = {}
        for tp in tps:
            if tp in kept:
                self._positions[tp] = kept[tp]
            elif tp in committed:
                self._positions[tp] = committed[tp]
            else:
                self._positions[tp] = 0 if self._start == "earliest" else self._bus._end_offset(tp)

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._bus._cond:
            while True:
                self._check()
                records = self._fetch(max(max_records, 1))
                remaining = deadline - time.monotonic()
                if records or remaining <= 0:
                    return records
                self._bus._cond.wait(remaining)

    def _fetch(self, max_records: int) -> list[Record]:
        tps = list(self._positions)
        if not tps:
            return []
        self._next %= len(tps)
        order = tps[self._next :] + tps[: self._next]
        self._next += 1
        records: list[Record] = []
        for tp in order:
            log = self._bus._topics[tp[0]][tp[1]]
            position = self._positions[tp]
            while position < len(log) and len(records) < max_records:
                visible = log[position].visible(self.read_committed)
                if visible is None:
                    break
                if visible:
                    records.append(log[position].record)
                position += 1
            self._positions[tp] = position
            if len(records) >= max_records:
                break
        return records

    def commit(self) -> None:
        with self._bus._cond:
            self._check()
            self._bus._groups[self.group_id].committed.update(self._positions)

    def assignment(self) -> list[tuple[str, int]]:
        with self._bus._cond:
            return list(self._positions)

    def group_metadata(self) -> MemoryGroupMetadata:
        return MemoryGroupMetadata(self._bus, self.group_id, self)

    def lag(self) -> dict[TP, int]:
        with self._bus._cond:
            return {tp: self._bus._end_offset(tp) - position for tp, position in self._positions.items()}

    def positions(self) -> dict[TP, int]:
        """The position (next offset to read) of each assigned partition."""
        with self._bus._cond:
            return dict(self._positions)

    def close(self) -> None:
        with self._bus._cond:
            if self._closed:
                return
            self._closed = True
            group = self._bus._groups[self.group_id]
            group.members = [member for member in group.members if member is not self]
            self._positions = {}
            self._bus._rebalance(group)
            self._bus._cond.notify_all()

    def _check(self) -> None:
        if self._closed:
            raise BusError("the consumer is closed")
        self._bus._check_open()


class MemoryProducer:
    def __init__(self, bus: MemoryBus, client_id: str) -> None:
        self._bus = bus
        self.client_id = client_id
        self._closed = False

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        with self._bus._cond:
            self._check()
            self._bus._append(topic, value, key, partition, self._txn())

    def flush(self, timeout: float = 30.0) -> None:
        with self._bus._cond:
            self._check()

    def poll(self, timeout: float = 0.0) -> int:
        del timeout
        return 0  # every record is in the log the moment it is produced

    def close(self) -> None:
        with self._bus._cond:
            self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise BusError("the producer is closed")

    def _txn(self) -> _Txn | None:
        return None


class MemoryTransactionalProducer(MemoryProducer):
    def __init__(self, bus: MemoryBus, transactional_id: str, epoch: int) -> None:
        super().__init__(bus, transactional_id)
        self.transactional_id = transactional_id
        self._epoch = epoch

    def _check(self) -> None:
        super()._check()
        if self._bus._txn_epochs.get(self.transactional_id) != self._epoch:
            raise FencedError(
                f"transactional id {self.transactional_id!r} was taken over by a newer producer"
            )

    def _txn(self) -> _Txn:
        txn = self._bus._open_txns.get(self.transactional_id)
        if txn is None:
            raise BusError("no transaction in progress: call begin() first")
        return txn

    def begin(self) -> None:
        with self._bus._cond:
            self._check()
            if self.transactional_id in self._bus._open_txns:
                raise BusError("a transaction is already in progress")
            self._bus._open_txns[self.transactional_id] = _Txn()

    def commit(self, consumed: ConsumedOffsets | None = None) -> None:
        with self._bus._cond:
            self._check()
            txn = self._txn()
            if consumed is not None:
                group = consumed.group
                if not isinstance(group, MemoryGroupMetadata) or group.bus is not self._bus:
                    raise BusError(
                        "commit(consumed) needs the group metadata of a consumer of this MemoryBus"
                    )
                group.member._check()  # a member that left its group cannot commit for it
                txn.offsets.setdefault(group.group_id, {}).update(consumed.offsets)
            txn.state = "committed"
            del self._bus._open_txns[self.transactional_id]
            for group_id, offsets in txn.offsets.items():
                self._bus._groups.setdefault(group_id, _Group()).committed.update(offsets)
            self._bus._cond.notify_all()

    def abort(self) -> None:
        with self._bus._cond:
            self._check()
            txn = self._txn()
            txn.state = "aborted"
            del self._bus._open_txns[self.transactional_id]
            self._bus._cond.notify_all()

    def close(self) -> None:
        with self._bus._cond:
            if not self._closed and self._bus._txn_epochs.get(self.transactional_id) == self._epoch:
                txn = self._bus._open_txns.pop(self.transactional_id, None)
                if txn is not None:  # Kafka aborts it when the transaction times out; sooner here
                    txn.state = "aborted"
                    self._bus._cond.notify_all()
            self._closed = True
