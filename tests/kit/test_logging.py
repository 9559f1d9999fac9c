"""JSON logging: one parseable object per line with the fixed keys, extras, exceptions; secrets masked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from tradebot.kit.logging import configure_logging
from tradebot.kit.settings import ServiceSettings, load_settings

_TOUCHED_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class SecretiveSettings(ServiceSettings):
    service_name: str = "logging-test"
    exchange_api_key: SecretStr = SecretStr("hunter2-hunter2")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide loggers: put them back for the other tests."""
    saved = {
        name: (list(lg.handlers), list(lg.filters), lg.level, lg.propagate)
        for name in _TOUCHED_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, filters, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        for handler in lg.handlers:
            if handler not in handlers:
                handler.close()
        lg.handlers[:] = handlers
        lg.filters[:] = filters
        lg.setLevel(level)
        lg.propagate = propagate
    logging.captureWarnings(False)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_a_log_line_is_one_json_object_with_fixed_keys_and_extras(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(SecretiveSettings))
    logging.getLogger("tradebot.feed").info("tick received", extra={"symbol": "BTC-USD", "price": 64000.5})
    [entry] = _lines(capsys)
    assert entry["message"] == "tick received"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "tradebot.feed"
    assert entry["service"] == "logging-test"
    assert entry["symbol"] == "BTC-USD"
    assert entry["price"] == 64000.5
    stamp = datetime.fromisoformat(entry["ts"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert list(entry)[:5] == ["ts", "level", "logger", "message", "service"]


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_become_one_string_field_on_the_same_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(SecretiveSettings))
    try:
        raise ValueError("bad tick\nwith a second line")
    except ValueError:
        logging.getLogger("tradebot.feed").exception("decode failed", extra={"offset": 7})
    [entry] = _lines(capsys)
    assert entry["level"] == "ERROR"
    assert entry["offset"] == 7
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad tick\nwith a second line" in entry["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_secrets_are_masked_when_logged(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(SecretiveSettings)
    configure_logging(settings)
    log = logging.getLogger("tradebot.test")
    log.info("starting", extra={"settings": settings})
    log.info("starting", extra={"settings": settings.safe_dump()})
    log.info("key in use", extra={"key": settings.exchange_api_key})
    log.info("settings are %s", settings)
    out = capsys.readouterr().out
    assert "hunter2" not in out
    entries = [json.loads(line) for line in out.splitlines()]
    assert [entry["message"] for entry in entries][:3] == ["starting", "starting", "key in use"]
    assert entries[0]["settings"]["exchange_api_key"] == "**********"
    assert entries[0]["settings"]["service_name"] == "logging-test"
    assert entries[1]["settings"] == entries[0]["settings"]
    assert entries[2]["key"] == "**********"


@pytest.mark.usefixtures("restore_logging")
def test_fixed_keys_cannot_be_overwritten_by_extras(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(SecretiveSettings))
    logging.getLogger("x").warning("hello", extra={"service": "impostor", "level": "DEBUG"})
    [entry] = _lines(capsys)
    assert entry["service"] == "logging-test"
    assert entry["level"] == "WARNING"


@pytest.mark.usefixtures("restore_logging")
def test_uvicorn_loggers_go_through_the_same_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(SecretiveSettings))
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "POST", "/strategies/s/halt", "1.1", 200)
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/readyz", "1.1", 200)
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/fills?limit=200", "1.1", 200)
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/readyz", "1.1", 503)
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/fills?limit=0", "1.1", 422)
    server, halt, failed_probe, failed_read = _lines(capsys)
    assert server["logger"] == "uvicorn.error"
    assert server["message"] == "Started server process [42]"
    assert (halt["method"], halt["path"], halt["status"], halt["level"]) == (
        "POST",
        "/strategies/s/halt",
        200,
        "INFO",
    )
    # A passing probe or a dashboard's polling read is noise every few seconds (debug level); a failure is news.
    assert (failed_probe["path"], failed_probe["status"]) == ("/readyz", 503)
    assert (failed_read["path"], failed_read["status"]) == ("/fills?limit=0", 422)


@pytest.mark.usefixtures("restore_logging")
def test_probe_and_polling_access_logs_are_at_debug_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(SecretiveSettings, log_level="debug"))
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/metrics", "1.1", 200)
    access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/summary", "1.1", 200)
    assert [(line["path"], line["level"]) for line in _lines(capsys)] == [
        ("/metrics", "DEBUG"),
        ("/summary", "DEBUG"),
    ]


@pytest.mark.usefixtures("restore_logging")
def test_level_is_applied_and_reconfiguring_does_not_duplicate_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(load_settings(SecretiveSettings))
    configure_logging(load_settings(SecretiveSettings, log_level="warning"))
    log = logging.getLogger("tradebot.test")
    log.info("hidden")
    log.warning("shown")
    assert [entry["message"] for entry in _lines(capsys)] == ["shown"]


@pytest.mark.usefixtures("restore_logging")
def test_text_format_for_terminals(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(SecretiveSettings, log_json=False))
    logging.getLogger("tradebot.test").info("tick", extra={"symbol": "ETH-USD", "key": SecretStr("hunter2")})
    [line] = capsys.readouterr().out.splitlines()
    assert " INFO    tradebot.test: tick " in line
    assert 'symbol="ETH-USD"' in line
    assert "hunter2" not in line
