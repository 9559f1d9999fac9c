"""Metrics more than one service exposes, besides the HTTP ones of `kit.app`."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, ClassVar, Protocol, Self

from prometheus_client import CollectorRegistry, Gauge


class PerRegistry:
    """Metrics a service defines on a registry, once: `of(registry)` makes them on first use and returns
    the same object after. In `tradebot up --embedded` every service defines its metrics on the one
    registry of the process, and two strategies (or a strategy and the executor sharing the consumer lag
    gauge) must not define the same series twice. Subclasses take the registry as their one argument."""

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, dict[type, Any]]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.RLock] = threading.RLock()  # metrics may use other metrics (the lag gauge)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Self:
        with PerRegistry._lock:
            defined = PerRegistry._instances.setdefault(registry, {})
            found = defined.get(cls)
            if found is None:
                found = defined[cls] = cls(registry)  # type: ignore[call-arg]
            instance: Self = found
            return instance


class LagSource(Protocol):
    """What a bus consumer offers (`tradebot.adapters.bus.Consumer.lag`)."""

    def lag(self) -> dict[tuple[str, int], int]: ...


class ConsumerLagGauge(PerRegistry):
    """`tradebot_consumer_lag{group, topic, partition}`: records of an assigned partition not yet consumed.

    Partitions that move to another group member stop being reported here (their series go away)
    rather than keep a stale value. One per registry (`of`): the strategies and the executor share it."""

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
