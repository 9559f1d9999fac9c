"""The bus over Kafka (confluent-kafka / librdkafka).

Producers are idempotent, batch briefly (`linger.ms=1`), compress with lz4 and partition keyed
records with murmur2 like the Java client (librdkafka's own default is CRC32), so every client,
and `MemoryBus`, puts a key on the same partition.

Errors: a `KafkaException` becomes a `BusError`; when the producer was fenced (another instance
with the same transactional id) or hit a fatal error, it is a `FencedError`: that producer instance
is unusable and must be closed (and the service stop or start a new one). An error whose
`txn_requires_abort()` is true is a plain `BusError`: call `abort()` and retry the batch.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from confluent_kafka import Consumer as _KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka import Producer as _KafkaProducer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tradebot.adapters.bus import (
    DEFAULT_SESSION_TIMEOUT_MS,
    LOW_LATENCY_FETCH_WAIT_MS,
    BusError,
    ConsumedOffsets,
    FencedError,
    Record,
    TopicSpec,
)

_FENCED = frozenset(
    {
        KafkaError._FENCED,
        KafkaError._FATAL,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
logger = logging.getLogger(__name__)
_TIMEOUT_S = 30.0
# How often librdkafka reports consumer lag (see KafkaConsumer.lag).
_STATS_INTERVAL_MS = 2000
# Each transaction call's own timeout: a healthy commit takes milliseconds, and a pipeline should
# rather abort and retry a batch than stall for long.
_TXN_TIMEOUT_S = 10.0


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _bus_error(action: str, exc: BaseException) -> BusError:
    """Maps a confluent-kafka exception to FencedError (this instance must stop) or BusError, keeping
    Kafka's error code and name and whether it is retriable or requires an abort."""
    error = _kafka_error(exc)
    if error is None:
        return BusError(f"{action}: {exc}")
    if error.code() in _FENCED or error.fatal():
        return FencedError(f"{action}: {error.str()} ({error.name()})", code=error.code(), name=error.name())
    hint = " (abort the transaction)" if error.txn_requires_abort() else ""
    return BusError(
        f"{action}: {error.str()} ({error.name()}){hint}",
        code=error.code(),
        name=error.name(),
        retriable=error.retriable(),
        requires_abort=error.txn_requires_abort(),
    )


def _record(message: Message) -> Record:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:  # pragma: no cover - only errors lack them
        raise BusError(f"incomplete message from Kafka: {message!r}")
    return Record(topic, partition, offset, message.key(), message.value() or b"", message.timestamp()[1])


def _consume(consumer: _KafkaConsumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to `max_messages` messages, returning as soon as there is one: librdkafka's `consume(n, t)`
    waits the whole timeout unless it gets all n, so wait for the first with `poll` and take what
    else is already fetched with `consume(n - 1, 0)`."""
    messages = consumer.consume(max_messages, 0)
    if messages:
        return messages
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


_RETRIABLE = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def _watermarks(consumer: _KafkaConsumer, partition: TopicPartition, deadline: float) -> tuple[int, int]:
    """Low and high watermarks, retrying while a just-created topic's leadership settles."""
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                partition, timeout=max(1.0, deadline - time.monotonic())
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = _kafka_error(exc)
            if error is None or error.code() not in _RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# How many delivery errors a producer keeps word for between two flushes (all are counted).
_ERRORS_KEPT = 5


class KafkaProducer:
    """An idempotent producer. Bounded: the local queue holds at most librdkafka's
    `queue.buffering.max.messages`, delivery errors are counted and only the last few kept, and a
    `produce` into a full queue waits at most `queue_wait_s` (then BusError, retriable): with Kafka down
    the caller gets backpressure, not a thread that never returns."""

    def __init__(self, config: dict[str, Any], *, queue_wait_s: float = 30.0) -> None:
        self._errors: collections.deque[str] = collections.deque(maxlen=_ERRORS_KEPT)
        self._failed = 0
        self._lock = threading.Lock()
        self.queue_wait_s = queue_wait_s
        try:
            self._producer = _KafkaProducer(config)
        except KafkaException as exc:
            raise _bus_error("creating the producer", exc) from exc

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            with self._lock:
                self._failed += 1
                self._errors.append(
                    f"{message.topic()}[{message.partition()}]: {error.str()} ({error.name()})"
                )

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        deadline = time.monotonic() + self.queue_wait_s
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=-1 if partition is None else partition,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError as exc:
                # The local queue is full (Kafka slow or away): serve deliveries, then retry, for a while.
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusError(
                        f"producing to {topic}: the local queue stayed full for {self.queue_wait_s}s",
                        name="QUEUE_FULL",
                        retriable=True,
                    ) from exc
                self._producer.poll(min(0.1, left))
            except KafkaException as exc:
                raise _bus_error(f"producing to {topic}", exc) from exc
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        self._producer.poll(timeout)
        return len(self._producer)

    def flush(self, timeout: float = 30.0) -> None:
        try:
            remaining = self._producer.flush(timeout)
        except KafkaException as exc:
            raise _bus_error("flushing", exc) from exc
        with self._lock:
            failed, errors, self._failed = self._failed, list(self._errors), 0
            self._errors.clear()
        if failed:
            raise BusError(f"{failed} record(s) not delivered: {'; '.join(errors)}")
        if remaining:
            raise BusError(f"{remaining} record(s) still undelivered after {timeout}s")

    def close(self) -> None:
        """Delivers what it can within a few seconds, drops the rest and releases the client."""
        with contextlib.suppress(KafkaException, RuntimeError):
            self._producer.flush(5.0)
        self._release()

    def _release(self) -> None:
        # RuntimeError: already closed. A fenced producer warns that it cannot abort its transaction.
        # SystemError: confluent-kafka's close can deliver librdkafka's last log lines (a fenced producer's fatal
        # error) to the logger while its own exception is still pending, which CPython reports as "returned a
        # result with an exception set". The client is being dropped either way: its caller must not fail.
        with contextlib.suppress(KafkaException, RuntimeError, SystemError), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self._producer.purge()
            self._producer.close()


class TransactionStuckError(BusError):
    """A transaction call did not return in time; the producer must be replaced (then retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True, requires_abort=True)


class KafkaTransactionalProducer(KafkaProducer):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.stuck = False
        self._written: set[str] = set()  # the topics of the open transaction
        try:
            self._producer.init_transactions(_TIMEOUT_S)
        except KafkaException as exc:
            raise _bus_error("init_transactions", exc) from exc

    def begin(self) -> None:
        self._written.clear()
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise _bus_error("begin_transaction", exc) from exc

    def commit(self, consumed: ConsumedOffsets | None = None) -> None:
        positions = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in (consumed.offsets.items() if consumed is not None else ())
        ]
        metadata: Any = consumed.group if consumed is not None else None
        outcome: dict[str, BaseException] = {}

        def finish() -> None:
            try:
                if positions:
                    self._producer.send_offsets_to_transaction(positions, metadata, _TXN_TIMEOUT_S)
                self._producer.commit_transaction(_TXN_TIMEOUT_S)
            except BaseException as exc:  # handed to the caller's thread below
                outcome["error"] = exc

        # librdkafka can block in send_offsets_to_transaction past its timeout when the group
        # coordinator went away (librdkafka issues 5456 and 5511, e.g. after a broker restart): the
        # calls run in a daemon thread so the caller gets TransactionStuckError and can start over
        # with a new producer (whose init_transactions fences this one) instead of hanging forever.
        worker = threading.Thread(target=finish, name="kafka-txn-commit", daemon=True)
        worker.start()
        worker.join(2 * _TXN_TIMEOUT_S + 5.0)
        if worker.is_alive():
            self.stuck = True
            raise TransactionStuckError("the transaction commit did not return; this producer is abandoned")
        error = outcome.get("error")
        if isinstance(error, KafkaException):
            raise _bus_error(f"commit_transaction{self._topics_written()}", error) from error
        if error is not None:
            raise error
        with self._lock:
            self._errors.clear()  # a committed transaction delivered everything
            self._failed = 0

    def produce(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        self._written.add(topic)
        super().produce(topic, value, key, partition)

    def _topics_written(self) -> str:
        """` (writing fills, orders)`: the commit's error says which request failed (adding partitions,
        refused for a topic this user may not write) but not which topic; these are the candidates."""
        return f" (writing {', '.join(sorted(self._written))})" if self._written else ""

    def abort(self) -> None:
        if self.stuck:
            return  # its commit thread still holds librdkafka; the next producer fences it
        try:
            self._producer.abort_transaction(_TIMEOUT_S)
        except KafkaException as exc:
            raise _bus_error("abort_transaction", exc) from exc
        with self._lock:
            self._errors.clear()  # purged with the transaction
            self._failed = 0

    def close(self) -> None:
        if self.stuck:
            return  # closing would wait for the stuck call; the process exit reclaims it
        # Records of an open transaction are dropped; the transaction is aborted (by librdkafka, the
        # coordinator's timeout or the next instance's init_transactions).
        self._release()


class KafkaConsumer:
    def __init__(self, config: dict[str, Any], topics: Sequence[str]) -> None:
        self._lag: dict[tuple[str, int], int] = {}
        try:
            # librdkafka's statistics carry each partition's lag against the end a read_committed
            # reader can reach (the last stable offset): no extra broker requests, served from poll.
            self._consumer = _KafkaConsumer(
                {**config, "statistics.interval.ms": _STATS_INTERVAL_MS, "stats_cb": self._on_stats}
            )
            self._consumer.subscribe(list(topics))
        except KafkaException as exc:
            raise _bus_error("creating the consumer", exc) from exc

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        try:
            messages = _consume(self._consumer, max(max_records, 1), timeout)
        except KafkaException as exc:
            raise _bus_error("consuming", exc) from exc
        records: list[Record] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise _bus_error("consuming", KafkaException(error))
            records.append(_record(message))
        return records

    def group_metadata(self) -> object:
        try:
            return self._consumer.consumer_group_metadata()
        except (KafkaException, RuntimeError) as exc:  # RuntimeError: closed
            raise _bus_error("reading the consumer group metadata", exc) from exc

    def _positions(self) -> list[TopicPartition]:
        assignment = self._consumer.assignment()
        if not assignment:
            return []
        return [tp for tp in self._consumer.position(assignment) if tp.offset >= 0]

    def commit(self) -> None:
        try:
            positions = self._positions()
            if not positions:
                return
            result = self._consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            raise _bus_error("committing offsets", exc) from exc
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise BusError(
                f"committing offsets failed: {', '.join(f'{tp.topic}[{tp.partition}]: {tp.error}' for tp in failed)}"
            )

    def assignment(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def _on_stats(self, raw: str) -> None:
        try:
            topics = json.loads(raw).get("topics", {})
        except ValueError:
            return
        lag: dict[tuple[str, int], int] = {}
        for topic, info in topics.items():
            for key, partition in info.get("partitions", {}).items():
                # `consumer_lag_stored`: from what the application has consumed (`consumer_lag` counts
                # from the last commit). Partition -1 is librdkafka's internal one; -1 is "not known".
                value = partition.get("consumer_lag_stored", -1)
                if key != "-1" and isinstance(value, int) and value >= 0:
                    lag[(topic, int(key))] = value
        self._lag = lag

    def lag(self) -> dict[tuple[str, int], int]:
        try:
            assigned = set(self.assignment())
        except (KafkaException, RuntimeError):  # closed
            return {}
        return {tp: value for tp, value in self._lag.items() if tp in assigned}

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self._consumer.close()


# librdkafka's codes for a connection the broker refused: login (SASL) failed, TLS handshake failed.
_REFUSALS = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL})
# The BusError name of a refused connection.
_REFUSED = "CONNECTION_REFUSED"

# Replicas a topic gets by default: three, or every broker of a smaller cluster.
_MAX_DEFAULT_REPLICAS = 3


def replication_for(
    brokers: int, replication_factor: int | None = None, min_insync_replicas: int | None = None
) -> tuple[int, int]:
    """The replication factor and `min.insync.replicas` of a new topic: as given, else min(3, brokers)
    replicas and 2 in sync when there are 3 (with `acks=all`, every acknowledged write is then on two
    brokers, and one broker may be lost without losing a write or stopping writes), 1 below that."""
    replicas = replication_factor if replication_factor is not None else min(_MAX_DEFAULT_REPLICAS, brokers)
    in_sync = min_insync_replicas if min_insync_replicas is not None else (2 if replicas >= 3 else 1)
    if replicas < 1 or in_sync < 1:
        raise BusError(f"replication factor {replicas} and min.insync.replicas {in_sync} must be >= 1")
    if in_sync > replicas:
        # Every acks=all write would fail with NOT_ENOUGH_REPLICAS: refuse rather than create such a topic.
        raise BusError(f"min.insync.replicas {in_sync} is more than the replication factor {replicas}")
    return replicas, in_sync


class KafkaBus:
    """The bus on a Kafka cluster. New topics get `replication_factor` replicas and `min_insync_replicas`
    (None: from the number of brokers up when they are created, see `replication_for`)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_config: dict[str, str] | None = None,
        replication_factor: int | None = None,
        min_insync_replicas: int | None = None,
        refusal_hint: str = "",
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
    ) -> None:
        self._replication_factor = replication_factor
        self._session_timeout_ms = session_timeout_ms
        self._min_insync_replicas = min_insync_replicas
        self._refusal_hint = refusal_hint
        self._refusal: str | None = None
        self._base: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            # librdkafka's own messages go through logging (JSON in a container), not raw to stderr.
            "logger": logging.getLogger("tradebot.adapters.librdkafka"),
            "error_cb": self._on_client_error,
            **(client_config or {}),
        }
        self._admin: AdminClient | None = AdminClient(dict(self._base))

    def _on_client_error(self, error: KafkaError) -> None:
        # A refused login or TLS handshake reaches the caller only as "transport failure" (librdkafka
        # retries it like a broken connection); keep its reason so errors can say why.
        if error.code() in _REFUSALS:
            self._refusal = error.str()

    def _error(self, action: str, exc: BaseException) -> BusError:
        """`_bus_error`, saying why the broker refused the connection when it did (bad credentials,
        an untrusted certificate) instead of librdkafka's bare "Broker transport failure"."""
        admin = self._admin
        if admin is not None:
            admin.poll(0)  # serves error_cb
        error = _bus_error(action, exc)
        if self._refusal is None:
            return error
        hint = f" ({self._refusal_hint})" if self._refusal_hint else ""
        return BusError(
            f"{error}: Kafka refused the connection: {self._refusal}{hint}",
            code=error.code,
            name=_REFUSED,
            retriable=False,
        )

    def _metadata(self, action: str, timeout: float = _TIMEOUT_S) -> Any:
        """The cluster's metadata, asked in slices of a second so that a refused connection (which librdkafka
        retries like a broken one) ends the wait at once with its reason instead of after `timeout`."""
        admin = self._open_admin()
        deadline = time.monotonic() + timeout
        while True:
            try:
                metadata = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except KafkaException as exc:
                admin.poll(0)  # serves error_cb
                if self._refusal is not None or time.monotonic() >= deadline:
                    raise self._error(action, exc) from exc
                continue
            self._refusal = None  # a success clears an old refusal (credentials rotated since)
            return metadata

    def check_connection(self, timeout: float = 1.5) -> None:
        """One metadata request: returns when a broker answers it (over TLS and logged in, where configured),
        else raises BusError naming the refusal (see `_error`). What readiness asks of Kafka."""
        if not self._metadata("asking Kafka for metadata", timeout).brokers:
            raise BusError("Kafka answered without any broker")

    def _open_admin(self) -> AdminClient:
        """The admin client, or BusError once the bus is closed (as the memory bus does)."""
        if self._admin is None:
            raise BusError("the bus is closed")
        return self._admin

    def _producer_config(self, client_id: str) -> dict[str, Any]:
        return {
            **self._base,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            # Tick-to-fill latency is the product: batch for at most 1 ms (throughput comes from
            # large polls and transactions, not from waiting).
            "linger.ms": 1,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",  # the Java client's default: same key, same partition
        }

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        admin = self._open_admin()
        if not specs:
            return
        replicas, in_sync = self.replication()
        new_topics = []
        for spec in specs:
            config: dict[str, str] = {"min.insync.replicas": str(in_sync)}
            if spec.retention_ms is not None:
                config["retention.ms"] = str(spec.retention_ms)
            if spec.compacted:
                config["cleanup.policy"] = "compact"
            if spec.segment_ms is not None:
                config["segment.ms"] = str(spec.segment_ms)
            new_topics.append(
                NewTopic(
                    spec.name, num_partitions=spec.partitions, replication_factor=replicas, config=config
                )
            )
        futures = admin.create_topics(new_topics, operation_timeout=_TIMEOUT_S)
        existing: list[str] = []
        for name, future in futures.items():
            try:
                future.result(timeout=_TIMEOUT_S * 2)
            except KafkaException as exc:
                error = _kafka_error(exc)
                if error is None or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._error(f"creating topic {name}", exc) from exc
                existing.append(name)
        self._wait_for_leaders([spec.name for spec in specs])
        self._warn_if_under_replicated(existing, replicas)

    def _warn_if_under_replicated(self, names: list[str], wanted: int) -> None:
        """Existing topics are left as they are; one with fewer replicas than a new one would get (made on a
        smaller cluster, say) is said once at start, as it does not survive what the others do."""
        if not names:
            return
        topics = self._open_admin().list_topics(timeout=_TIMEOUT_S).topics
        for name in names:
            partitions = topics[name].partitions.values() if name in topics else ()
            replicas = min((len(partition.replicas) for partition in partitions), default=wanted)
            if replicas < wanted:
                logger.warning(
                    "an existing topic has fewer replicas than the services would give it; raise them with"
                    " kafka-reassign-partitions",
                    extra={"topic": name, "replicas": replicas, "wanted": wanted},
                )

    def replication(self) -> tuple[int, int]:
        """The replication factor and min.insync.replicas `ensure_topics` gives new topics."""
        if self._replication_factor is not None and self._min_insync_replicas is not None:
            return replication_for(0, self._replication_factor, self._min_insync_replicas)
        brokers = len(self._metadata("counting the brokers").brokers)
        return replication_for(brokers, self._replication_factor, self._min_insync_replicas)

    def _wait_for_leaders(self, names: list[str], timeout: float = _TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            metadata = self._open_admin().list_topics(timeout=max(deadline - time.monotonic(), 1.0))
            missing = [
                name
                for name in names
                if name not in metadata.topics
                or metadata.topics[name].error is not None
                or not metadata.topics[name].partitions
                or any(p.leader < 0 for p in metadata.topics[name].partitions.values())
            ]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BusError(f"topics without leaders after {timeout}s: {missing}")
            time.sleep(0.1)

    def producer(self, client_id: str, *, linger_ms: int = 1) -> KafkaProducer:
        self._open_admin()
        return KafkaProducer({**self._producer_config(client_id), "linger.ms": linger_ms})

    def transactional_producer(self, transactional_id: str) -> KafkaTransactionalProducer:
        self._open_admin()
        return KafkaTransactionalProducer(
            {
                **self._producer_config(transactional_id),
                "transactional.id": transactional_id,
                # Right after a commit the coordinator is still writing the markers and answers the next
                # transaction's first request with CONCURRENT_TRANSACTIONS; the client retries after
                # retry.backoff.ms. At the 100 ms default that alone made each transaction take 100 ms
                # on a local broker; 5 ms makes it about 40 ms.
                "retry.backoff.ms": 5,
                "retry.backoff.max.ms": 50,
            }
        )

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        read_committed: bool = True,
        start: Literal["earliest", "latest"] = "earliest",
        fetch_wait_ms: int = LOW_LATENCY_FETCH_WAIT_MS,
    ) -> KafkaConsumer:
        self._open_admin()
        config = {
            **self._base,
            "group.id": group_id,
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            "auto.offset.reset": start,
            "fetch.wait.max.ms": fetch_wait_ms,  # see LOW_LATENCY_FETCH_WAIT_MS
            "session.timeout.ms": self._session_timeout_ms,
            "heartbeat.interval.ms": self._session_timeout_ms // 3,
        }
        return KafkaConsumer(config, topics)

    def read_all(self, topic: str, *, read_committed: bool = True, timeout: float = 10.0) -> list[Record]:
        by_partition: dict[int, list[Record]] = {}
        for batch in self.scan(topic, read_committed=read_committed, timeout=timeout):
            for record in batch:
                by_partition.setdefault(record.partition, []).append(record)
        return [record for partition in sorted(by_partition) for record in by_partition[partition]]

    def scan(
        self, topic: str, *, last: int | None = None, read_committed: bool = True, timeout: float = 10.0
    ) -> Iterator[list[Record]]:
        self._open_admin()
        deadline = time.monotonic() + timeout
        consumer = _KafkaConsumer(
            {
                **self._base,
                "group.id": f"tradebot-read-all-{uuid.uuid4().hex}",  # never joined: assign() only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                raise BusError(f"unknown topic {topic!r}: {described.error if described else 'not found'}")
            ends: dict[int, int] = {}
            starts: list[TopicPartition] = []
            for partition in sorted(described.partitions):
                low, high = _watermarks(consumer, TopicPartition(topic, partition), deadline)
                first = low if last is None else max(low, high - last)
                if high > first:
                    ends[partition] = high
                    starts.append(TopicPartition(topic, partition, first))
            pending = set(ends)
            if starts:
                consumer.assign(starts)
            while pending:
                if time.monotonic() > deadline:
                    raise BusError(
                        f"read_all({topic}): partitions {sorted(pending)} not read to the end in {timeout}s"
                    )
                batch: list[Record] = []
                for message in _consume(consumer, 1000, 0.2):
                    error = message.error()
                    partition = message.partition()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            if partition is not None:
                                pending.discard(partition)
                            continue
                        raise _bus_error(f"read_all({topic})", KafkaException(error))
                    record = _record(message)
                    if record.offset < ends[record.partition]:
                        batch.append(record)
                    if record.offset + 1 >= ends[record.partition]:
                        pending.discard(record.partition)
                if batch:
                    yield batch
        except KafkaException as exc:
            raise self._error(f"read_all({topic})", exc) from exc
        finally:
            consumer.close()

    def close(self) -> None:
        """Releases the admin client (librdkafka frees it with the last reference); the producers and
        consumers made before stay open, each closed by its owner. A closed bus makes no more."""
        self._admin = None
