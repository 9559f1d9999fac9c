"""issue 13.12: the store over Redis with TLS (rediss://, the CA from a file or as PEM text) and an ACL user
(`rediss://user:password@host`); a wrong password or an untrusted certificate is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from tests.plugins.secure_servers import REDIS_PASSWORD, REDIS_USER, Certificates, TlsRedis, make_certificates
from tradebot.adapters.connect import PipelineSettings, redis_store
from tradebot.adapters.store import StoreError


async def test_the_store_works_over_tls_as_the_acl_user(tls_redis: TlsRedis) -> None:
    for ca in ({"redis_ssl_ca_file": tls_redis.ca_file}, {"redis_ssl_ca_pem": tls_redis.ca_file.read_text()}):
        settings = PipelineSettings(redis_url=tls_redis.url(REDIS_USER, REDIS_PASSWORD), **ca)
        store = redis_store(settings)
        try:
            assert await store.ping()
            now = datetime(2026, 1, 2, tzinfo=UTC)
            await store.set_last_price("TLS", 101.5, now)
            assert (await store.last_prices())["TLS"] == (101.5, now)
        finally:
            await store.close()


@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        (REDIS_USER, "not-the-password", "invalid username-password pair"),
        ("default", REDIS_PASSWORD, "invalid username-password pair"),  # the default user is off
    ],
)
async def test_wrong_credentials_are_refused(
    tls_redis: TlsRedis, user: str, password: str, reason: str
) -> None:
    store = redis_store(
        PipelineSettings(redis_url=tls_redis.url(user, password), redis_ssl_ca_file=tls_redis.ca_file)
    )
    try:
        assert not await store.ping()
        with pytest.raises(StoreError, match=reason) as caught:
            await store.last_prices()
        assert password not in str(caught.value)
    finally:
        await store.close()


async def test_an_untrusted_certificate_is_refused(tls_redis: TlsRedis, tmp_path: Path) -> None:
    other_ca = make_certificates(tmp_path / "other").ca_file
    store = redis_store(
        PipelineSettings(redis_url=tls_redis.url(REDIS_USER, REDIS_PASSWORD), redis_ssl_ca_file=other_ca)
    )
    try:
        with pytest.raises(StoreError, match="certificate verify failed"):
            await store.last_prices()
    finally:
        await store.close()


def test_the_tls_redis_takes_no_plain_connection(
    tls_redis: TlsRedis, test_certificates: Certificates
) -> None:
    """The server of these tests speaks TLS only, so a passing test above went over TLS."""
    assert tls_redis.ca_file == test_certificates.ca_file
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, socket_timeout=2)
    with pytest.raises(redis.RedisError):
        plain.ping()
