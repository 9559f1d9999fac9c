"""The operator logs the services' JSON lines: one log pipeline (and tests/cluster's check) reads them all."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import kopf
import pytest

from tradebot.operator.command import use_service_log_format


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_kopf_records_come_out_as_service_json_lines(root_handlers: None) -> None:
    before = list(logging.getLogger().handlers)  # pytest's own capture handlers
    kopf.configure(log_format=kopf.LogFormat.JSON, log_prefix=False)
    use_service_log_format()
    out = io.StringIO()
    for handler in logging.getLogger().handlers:
        if handler not in before and isinstance(handler, logging.StreamHandler):
            handler.setStream(out)
    ref = {"kind": "TradingStrategy", "name": "sma", "namespace": "ns"}
    logging.getLogger("kopf.objects").info("Handler succeeded.", extra={"k8s_ref": ref, "k8s_skip": False})
    logging.getLogger("aiohttp.access").info("GET /healthz 200")  # probe noise: dropped at INFO
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    entry = lines[0]
    assert {"ts", "level", "logger", "message", "service"} <= entry.keys()
    assert entry["level"] == "INFO"
    assert entry["logger"] == "kopf.objects"
    assert entry["service"] == "operator"
    assert entry["object"] == ref
    assert "k8s_skip" not in entry
    assert "k8s_ref" not in entry
