"""Metrics defined once per registry (`PerRegistry.of`): what lets every service of `tradebot up
--embedded` define its metrics on the one registry of the process."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter

from tradebot.kit.metrics import ConsumerLagGauge, PerRegistry


class Uses(PerRegistry):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.count = Counter("tradebot_test_uses", "A test counter.", registry=registry)
        self.lag = ConsumerLagGauge.of(registry)  # metrics made while making metrics


def test_one_instance_per_registry_and_class_even_when_metrics_use_metrics() -> None:
    registry, other = CollectorRegistry(), CollectorRegistry()
    first = Uses.of(registry)
    assert Uses.of(registry) is first
    assert first.lag is ConsumerLagGauge.of(registry)
    assert Uses.of(other) is not first
    assert Uses.of(other).lag is not first.lag


def test_threads_get_the_same_instance() -> None:
    registry = CollectorRegistry()
    found: list[Uses] = []
    threads = [threading.Thread(target=lambda: found.append(Uses.of(registry))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(instance) for instance in found}) == 1
