"""Readiness: named async checks run concurrently with a timeout each, plus the shutting-down flag."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Readiness", "ReadinessCheck", "ReadinessReport", "tcp_check"]

# A check answers "can this service do its job right now?"; False, an exception or a timeout mean no.
ReadinessCheck = Callable[[], Awaitable[bool]]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadinessReport:
    status: Literal["ready", "not_ready", "shutting_down"]
    checks: dict[str, bool]

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def failing(self) -> list[str]:
        return sorted(name for name, passed in self.checks.items() if not passed)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "checks": self.checks}
        if self.failing:
            body["failing"] = self.failing
        return body


class Readiness:
    """What `/readyz` reports. Not ready once `mark_shutting_down()` is called, whatever the checks say."""

    def __init__(self, checks: Mapping[str, ReadinessCheck] | None = None, *, timeout_seconds: float = 2.0):
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._checks: dict[str, ReadinessCheck] = dict(checks or {})
        self._timeout_seconds = timeout_seconds
        self._shutting_down = False
        self._last: dict[str, bool] = {}

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Add a check once its subject exists (e.g. a consumer created inside the service's main)."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} already exists")
        self._checks[name] = check

    def mark_shutting_down(self) -> None:
        self._shutting_down = True

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def evaluate(self) -> ReadinessReport:
        if self._shutting_down:
            return ReadinessReport("shutting_down", {})
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(name, self._checks[name]) for name in names))
        checks = dict(zip(names, results, strict=True))
        return ReadinessReport("ready" if all(results) else "not_ready", checks)

    async def _run(self, name: str, check: ReadinessCheck) -> bool:
        reason = ""
        try:
            async with asyncio.timeout(self._timeout_seconds):
                passed = bool(await check())
        except TimeoutError:
            passed, reason = False, f"no answer within {self._timeout_seconds}s"
        except Exception as exc:
            passed, reason = False, f"{type(exc).__name__}: {exc}"
        # Probes come every few seconds: log only when a check changes its answer.
        if self._last.get(name) != passed:
            self._last[name] = passed
            if passed:
                logger.info("readiness check passes", extra={"check": name})
            else:
                logger.warning("readiness check fails", extra={"check": name, "reason": reason or "false"})
        return passed


def tcp_check(host: str, port: int) -> ReadinessCheck:
    """A check that passes when a TCP connection to `host:port` opens (Kafka, Redis, an exchange...)."""

    async def check() -> bool:
        _reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()
        return True

    return check
