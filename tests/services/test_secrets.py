"""Secrets never leave a service: a Redis password and the API token appear in no log line, no settings
error, no /readyz answer and no metric, while the host a service connects to still shows."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins._proc import ServerProcess, eventually, free_port, http_ok
from tests.plugins.servers import RedisServer, start_redis
from tradebot.adapters.connect import PipelineSettings
from tradebot.kit.settings import SecretUrl, ServiceSettings, SettingsError, load_settings, masked_url

REDIS_PASSWORD = "redis-Pa55-w0rd-xyzzy"
API_TOKEN = "api-T0ken-plugh-4242"


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path, password=REDIS_PASSWORD)
    try:
        yield server
    finally:
        server.process.stop()


def test_the_start_up_settings_show_the_redis_host_but_not_its_password() -> None:
    settings = PipelineSettings(redis_url=f"redis://app:{REDIS_PASSWORD}@redis.example:6379/0")
    dumped = settings.safe_dump()
    assert dumped["redis_url"] == "redis://app:**********@redis.example:6379/0"
    assert REDIS_PASSWORD not in repr(settings) + str(settings) + repr(dumped)
    assert REDIS_PASSWORD not in settings.model_dump_json()
    # What `tradebot up` hands a service process still carries it: the service must be able to connect.
    assert settings.to_env()["TRADEBOT_REDIS_URL"] == f"redis://app:{REDIS_PASSWORD}@redis.example:6379/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://:**********@h:1/0"),
        ("redis://user:pw@h/0", "redis://user:**********@h/0"),
        ("redis://pw@h", "redis://**********@h"),  # redis-py reads a lone user-info as the password
        ("rediss://h:6380/1", "rediss://h:6380/1"),
        ("redis://u:p@ss@h", "redis://u:**********@h"),  # an unescaped @ in the password
    ],
)
def test_masked_url(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_a_settings_error_never_echoes_a_redis_password() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(PipelineSettings, redis_url=f"http://:{REDIS_PASSWORD}@redis.example:6379/0")
    assert "TRADEBOT_REDIS_URL" in str(caught.value)
    assert REDIS_PASSWORD not in str(caught.value)


def test_a_url_setting_of_a_store_must_be_a_secret_url() -> None:
    with pytest.raises(TypeError, match="SecretUrl"):

        class _Leaky(ServiceSettings):
            redis_url: str = "redis://127.0.0.1:6379/0"

    class _Safe(ServiceSettings):
        redis_url: SecretUrl = SecretUrl("redis://127.0.0.1:6379/0")

    assert _Safe().safe_dump()["redis_url"] == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("command", ["api", "executor", "strategy", "feed"])
def test_a_configuration_error_line_never_echoes_a_password(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tradebot.cli", command],
        env={
            **os.environ,
            "TRADEBOT_REDIS_URL": f"memcached://:{REDIS_PASSWORD}@cache:11211",
            "TRADEBOT_API_TOKEN": API_TOKEN,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "TRADEBOT_REDIS_URL" in result.stderr
    assert REDIS_PASSWORD not in result.stdout + result.stderr
    assert API_TOKEN not in result.stdout + result.stderr


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:  # /readyz answers 503 when not ready: its body counts too
        return str(error.read().decode())


def test_a_running_service_logs_no_secret(protected_redis: RedisServer, tmp_path: Path) -> None:
    """The API with a password-protected Redis and a token: every log line of a run, its /readyz and its
    /metrics; then the same with a wrong Redis password, so readiness failures are logged too."""
    for password, ready in ((REDIS_PASSWORD, True), ("wrong-" + REDIS_PASSWORD, False)):
        port = free_port()
        env = {
            **os.environ,
            "TRADEBOT_REDIS_URL": f"redis://:{password}@127.0.0.1:{protected_redis.port}/0",
            "TRADEBOT_API_TOKEN": API_TOKEN,
            "TRADEBOT_HTTP_PORT": str(port),
            "TRADEBOT_HTTP_HOST": "127.0.0.1",
            "TRADEBOT_LOG_LEVEL": "DEBUG",
        }
        process = ServerProcess(
            f"api-{ready}", [sys.executable, "-m", "tradebot.cli", "api"], tmp_path, env=env
        )
        try:
            process.wait_until("/livez", lambda: http_ok(f"http://127.0.0.1:{port}/livez"), 60)  # noqa: B023
            assert eventually("readiness", lambda: http_ok(f"http://127.0.0.1:{port}/readyz") == ready)  # noqa: B023
            answers = _get(f"http://127.0.0.1:{port}/readyz") + _get(f"http://127.0.0.1:{port}/metrics")
            _get(f"http://127.0.0.1:{port}/strategies")
        finally:
            process.stop()
        log = process.log_path.read_text()
        assert "service starting" in log
        assert f"redis://:**********@127.0.0.1:{protected_redis.port}/0" in log  # the host still shows
        if not ready:
            assert "readiness check fails" in log
        for line in [*log.splitlines(), answers]:
            assert password not in line
            assert API_TOKEN not in line
