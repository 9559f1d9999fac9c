"""A bus that hands every call to another: subclass it in a test to watch or delay one kind of call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

from tradebot.adapters.bus import (
    LOW_LATENCY_FETCH_WAIT_MS,
    Bus,
    Consumer,
    Producer,
    Record,
    TopicSpec,
    TransactionalProducer,
)


class WrappedBus:
    def __init__(self, inner: Bus) -> None:
        self.inner = inner

    def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        self.inner.ensure_topics(specs)

    def producer(self, client_id: str, *, linger_ms: int = 1) -> Producer:
        return self.inner.producer(client_id, linger_ms=linger_ms)

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        return self.inner.transactional_producer(transactional_id)

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        read_committed: bool = True,
        start: Literal["earliest", "latest"] = "earliest",
        fetch_wait_ms: int = LOW_LATENCY_FETCH_WAIT_MS,
    ) -> Consumer:
        return self.inner.consumer(
            group_id, topics, read_committed=read_committed, start=start, fetch_wait_ms=fetch_wait_ms
        )

    def read_all(self, topic: str, *, read_committed: bool = True, timeout: float = 10.0) -> list[Record]:
        return self.inner.read_all(topic, read_committed=read_committed, timeout=timeout)

    def scan(
        self, topic: str, *, last: int | None = None, read_committed: bool = True, timeout: float = 10.0
    ) -> Iterator[list[Record]]:
        return self.inner.scan(topic, last=last, read_committed=read_committed, timeout=timeout)

    def close(self) -> None:
        self.inner.close()


class WrappedConsumer:
    """A consumer that hands every call to another: subclass it to watch or change one kind of call."""

    def __init__(self, inner: Consumer) -> None:
        self.inner = inner

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        return self.inner.poll(timeout, max_records)

    def commit(self) -> None:
        self.inner.commit()

    def assignment(self) -> list[tuple[str, int]]:
        return self.inner.assignment()

    def group_metadata(self) -> object:
        return self.inner.group_metadata()

    def lag(self) -> dict[tuple[str, int], int]:
        return self.inner.lag()

    def close(self) -> None:
        self.inner.close()
