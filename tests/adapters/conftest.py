"""Fixtures for the adapter contract suite: every test runs against the real and the memory adapter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.plugins.servers import KafkaBroker, RedisServer
from tradebot.adapters.bus import Bus
from tradebot.adapters.kafka import KafkaBus
from tradebot.adapters.memory_bus import MemoryBus
from tradebot.adapters.memory_store import MemoryStore
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.store import Store

StoreFactory = Callable[[str], Store]


@pytest.fixture(params=["memory", "kafka"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    instance: Bus
    if request.param == "kafka":
        broker: KafkaBroker = request.getfixturevalue("kafka")
        instance = KafkaBus(broker.bootstrap)
    else:
        instance = MemoryBus()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def names() -> Callable[[str], str]:
    """Unique topic names, group ids and transactional ids per test."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_server")  # started here, outside the event loop
    return str(request.param)


@pytest.fixture
def store_factory(request: pytest.FixtureRequest, store_kind: str) -> StoreFactory:
    """Makes a store with the given key prefix (Redis) or a fresh one (memory)."""
    if store_kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return lambda prefix: RedisStore(server.url, prefix=prefix)
    return lambda prefix: MemoryStore()


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    instance = store_factory(f"test-{uuid.uuid4().hex[:10]}")
    try:
        yield instance
    finally:
        await instance.clear()
        await instance.close()
