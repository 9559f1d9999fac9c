"""Metrics more than one service exposes, besides the HTTP ones of `kit.app`."""

from __future__ import annotations

import threading
import time
import weakref
from typing import ClassVar, Protocol

from prometheus_client import CollectorRegistry, Gauge


class LagSource(Protocol):
    """What a bus consumer offers (`tradebot.adapters.bus.Consumer.lag`)."""

    def lag(self) -> dict[tuple[str, int], int]: ...


class ConsumerLagGauge:
    """`tradebot_consumer_lag{group, topic, partition}`: records of an assigned partition not yet consumed.

    Partitions that move to another group member stop being reported here (their series go away)
    rather than keep a stale value. One per registry (`of`): in `tradebot up --embedded` the strategies
    and the executor share a registry."""

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, ConsumerLagGauge]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, registry: CollectorRegistry) -> ConsumerLagGauge:
        with cls._lock:
            found = cls._instances.get(registry)
            if found is None:
                found = cls._instances[registry] = cls(registry)
            return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self._gauge = Gauge(
            "tradebot_consumer_lag",
            "Records of an assigned partition not yet consumed.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self._reported: dict[str, set[tuple[str, int]]] = {}
        self._updated: dict[str, float] = {}

    def update(self, group: str, consumer: LagSource, *, every_s: float = 1.0) -> None:
        """Called after every poll; reads the consumer at most every `every_s` seconds per group (Kafka
        reports lag every 2 s anyway), so the hot loop does not pay for it."""
        now = time.monotonic()
        if now - self._updated.get(group, -every_s) < every_s:
            return
        self._updated[group] = now
        lag = consumer.lag()
        for topic, partition in self._reported.get(group, set()) - set(lag):
            self._gauge.remove(group, topic, str(partition))
        for (topic, partition), value in lag.items():
            self._gauge.labels(group=group, topic=topic, partition=str(partition)).set(value)
        self._reported[group] = set(lag)
