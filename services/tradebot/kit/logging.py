"""Structured logging on stdlib `logging`: one JSON object per line on stdout, uvicorn's loggers included.

Our own formatter (some 40 lines) rather than python-json-logger or structlog: it is all we need (fixed keys,
`extra` fields, secrets masked, exceptions as a string), it adds no dependency, and every library that logs
through stdlib `logging` (uvicorn, kopf, confluent-kafka's wrappers) comes out in the same shape.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from tradebot.kit.settings import ServiceSettings

__all__ = ["PROBE_PATHS", "JsonFormatter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}
# Successful probe and scrape requests are not worth an access-log line every few seconds: logged at
# debug level. So are successful reads (GET), which dashboards poll every few seconds (1,449 of 1,500 lines
# of a run were the dashboard's polling): writes and failures stay at info.
PROBE_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def _json_default(value: object) -> object:
    if isinstance(value, SecretStr | SecretBytes):
        return "**********"
    if isinstance(value, ServiceSettings):
        return value.safe_dump()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "service", **extra, "exception"?}` on one line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        for key, value in _extra_fields(record).items():
            entry.setdefault(key, value)  # the fixed keys win over an `extra` of the same name
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=_json_default, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal (`TRADEBOT_LOG_JSON=false`); extra fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extra_fields(record)
        if extra:
            fields = " ".join(
                f"{key}={json.dumps(value, default=_json_default)}" for key, value in extra.items()
            )
            head, newline, rest = line.partition("\n")
            line = f"{head} {fields}{newline}{rest}"
        return line


class _AccessLogFields(logging.Filter):
    """Turn uvicorn's positional access-log args into fields; successful probes and reads at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, _http_version, status = args
            ok = isinstance(status, int) and status < 400
            if ok and (str(path).split("?", 1)[0] in PROBE_PATHS or method in ("GET", "HEAD")):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                if not logging.getLogger().isEnabledFor(logging.DEBUG):
                    return False
            record.client = client
            record.method = method
            record.path = path
            record.status = status
        return True


_HANDLER_NAME = "tradebot.kit"


def configure_logging(settings: ServiceSettings) -> None:
    """Send every logger (root, uvicorn's) to one stdout handler in the configured format; idempotent."""
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(settings.service_name) if settings.log_json else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level.value)
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")
    for old_filter in [f for f in access.filters if isinstance(f, _AccessLogFields)]:
        access.removeFilter(old_filter)
    access.addFilter(_AccessLogFields())
    logging.captureWarnings(True)
