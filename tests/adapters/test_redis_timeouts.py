"""Every Redis call is bounded (issue 13.10): a Redis that stops answering makes the store raise a retriable
StoreError after its timeout instead of hanging the caller. Real Redis, paused with `CLIENT PAUSE`."""

from __future__ import annotations

import time
import uuid

import pytest
import redis.asyncio as aioredis

from tests.plugins.servers import RedisServer
from tradebot.adapters.connect import PipelineSettings, redis_store
from tradebot.adapters.redis_store import RedisStore
from tradebot.adapters.store import StoreError

PAUSE_MS = 8000


async def test_a_paused_redis_raises_after_the_timeout_not_when_it_answers_again(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix=f"timeouts-{uuid.uuid4().hex[:8]}", timeout_s=0.5)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await store.ping()
        await admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        started = time.monotonic()
        with pytest.raises(StoreError) as raised:
            await store.last_prices()
        took = time.monotonic() - started
        assert raised.value.retriable
        assert took < 2.0, f"a paused Redis held the call {took:.1f}s"  # before: the whole pause
        started = time.monotonic()
        assert not await store.ping()
        assert time.monotonic() - started < 2.0
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
        await store.close()


def test_the_settings_set_the_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEBOT_REDIS_TIMEOUT_SECONDS", "1.5")
    monkeypatch.setenv("TRADEBOT_REDIS_CONNECT_TIMEOUT_SECONDS", "0.25")
    store = redis_store(PipelineSettings())
    assert isinstance(store, RedisStore)
    kwargs = store._redis.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 0.25
