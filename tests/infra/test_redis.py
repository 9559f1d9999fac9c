"""The fixture Redis is real: a Streams round trip through redis-py's asyncio client."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.plugins.servers import RedisServer


async def test_stream_xadd_xrange_round_trip(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        stream = "test:orders"
        await client.delete(stream)
        ids = [await client.xadd(stream, {"order_id": f"o-{i}", "qty": str(i)}) for i in range(5)]
        entries = await client.xrange(stream)
        assert [entry_id for entry_id, _ in entries] == ids
        assert [fields["order_id"] for _, fields in entries] == [f"o-{i}" for i in range(5)]
        # Range reads are inclusive and ordered: the middle three by id.
        middle = await client.xrange(stream, min=ids[1], max=ids[3])
        assert [fields["qty"] for _, fields in middle] == ["1", "2", "3"]
        assert await client.xlen(stream) == 5
    finally:
        await client.aclose()


async def test_server_is_a_real_redis(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        info = await client.info("server")
        assert int(str(info["tcp_port"])) == redis_server.port
        assert str(info["redis_version"]).split(".")[0] >= "6"
    finally:
        await client.aclose()
