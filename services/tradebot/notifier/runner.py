"""Consume `fills`, `strategy-control` and `strategy-commands`; tell every sink that wants it; then commit.

No duplicate after a restart, no event lost:

- the group's offset is committed only once the record was delivered to every sink that wants it (or given
  up on): a restart reads again whatever was not finished;
- what was read again and had reached a sink already (a crash between the delivery and the commit) is not
  sent again: each delivery leaves a mark in the store, `delivered:<sink>|<event id>`, kept
  `dedup_ttl_s`, set only after the sink answered 2xx and checked before every delivery;
- the generic webhook gets the event id as its `Idempotency-Key` header too, so a receiver can drop the one
  repeat the marks cannot prevent (a crash between the sink's answer and the mark).

One record at a time (its sinks in parallel): a slow or failing sink holds the others for at most its
bounded retries, and no poll waits longer than the consumer's `max.poll.interval.ms` (5 min) allows.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

import httpx
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from tradebot.adapters.bus import Bus, BusError, Consumer, Record
from tradebot.adapters.store import Store, StoreError
from tradebot.adapters.topics import COMMANDS, CONTROL, FILLS
from tradebot.kit.lifecycle import ShutdownEvent
from tradebot.kit.metrics import ConsumerLagGauge, PerRegistry
from tradebot.notifier.sinks import Notification, SinkConfig, notification_of, request_for

logger = logging.getLogger(__name__)

TOPICS = (FILLS, CONTROL, COMMANDS)
# How often an idle notifier commits its position anyway: a new group that starts at the end of the
# topics must have that end on record, or events sent while it restarts would be skipped.
IDLE_COMMIT_S = 5.0


@dataclass
class NotifierMetrics(PerRegistry):
    """The notifier's metrics (catalogued in services/README.md), per sink and its kind."""

    registry: CollectorRegistry
    sent: Counter = field(init=False)
    failed: Counter = field(init=False)
    retried: Counter = field(init=False)
    duplicates: Counter = field(init=False)
    invalid: Counter = field(init=False)
    lag: ConsumerLagGauge = field(init=False)

    def __post_init__(self) -> None:
        r = self.registry
        labels = ["sink", "kind"]
        self.sent = Counter(
            "tradebot_notifier_sent", "Notifications a sink accepted (2xx).", labels, registry=r
        )
        self.failed = Counter(
            "tradebot_notifier_failed",
            "Notifications given up on (attempts used up, or refused).",
            labels,
            registry=r,
        )
        self.retried = Counter(
            "tradebot_notifier_retried",
            "Attempts repeated after a failure (5xx, 429, timeout).",
            labels,
            registry=r,
        )
        self.duplicates = Counter(
            "tradebot_notifier_duplicate",
            "Notifications not sent again: the sink had them already (read again after a restart).",
            labels,
            registry=r,
        )
        self.invalid = Counter(
            "tradebot_notifier_records_invalid", "Unreadable records (skipped).", registry=r
        )
        self.lag = ConsumerLagGauge.of(r)

    def know(self, sinks: list[SinkConfig]) -> None:
        """Every sink's series start at 0, so a rate or an alert on failures sees a 0, not nothing."""
        for sink in sinks:
            for counter in (self.sent, self.failed, self.retried, self.duplicates):
                counter.labels(sink=sink.name, kind=sink.kind)


@dataclass(frozen=True)
class Retry:
    """Bounded retries: `attempts` in all, waiting `initial_s` doubling up to `max_s` between them; a 429's
    Retry-After is honoured up to `retry_after_max_s`."""

    attempts: int = 5
    initial_s: float = 0.5
    max_s: float = 30.0
    retry_after_max_s: float = 30.0
    timeout_s: float = 10.0

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.max_s, self.initial_s * 2 ** (attempt - 1)))


class Outcome(StrEnum):
    SENT = "sent"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # shutdown during the retries: not finished, not committed


# Answers worth another attempt: the sink may take it later. Any other 4xx will not get better.
_RETRIABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number, or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class NotifierRunner:
    def __init__(
        self,
        *,
        bus: Bus,
        store: Store,
        sinks: list[SinkConfig],
        metrics: NotifierMetrics,
        retry: Retry = Retry(),
        group_id: str = "notifier",
        start: Literal["earliest", "latest"] = "latest",
        dedup_ttl_s: int = 7 * 86_400,
        poll_timeout_s: float = 0.2,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.sinks = sinks
        self.metrics = metrics
        self.retry = retry
        self.group_id = group_id
        self.start = start
        self.dedup_ttl_s = dedup_ttl_s
        self.poll_timeout_s = poll_timeout_s
        self._client = client
        self.ready = False
        metrics.know(sinks)

    async def run(self, shutdown: ShutdownEvent) -> None:
        # httpx logs every request's URL at INFO, and a webhook's URL or a Telegram bot token is a secret.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        consumer = await asyncio.to_thread(
            self.bus.consumer, self.group_id, list(TOPICS), read_committed=True, start=self.start
        )
        client = self._client or httpx.AsyncClient(timeout=self.retry.timeout_s, follow_redirects=False)
        try:
            await self._consume(consumer, client, shutdown)
        finally:
            if self._client is None:
                await client.aclose()
            await asyncio.to_thread(consumer.close)

    async def _consume(self, consumer: Consumer, client: httpx.AsyncClient, shutdown: ShutdownEvent) -> None:
        committed_at = time.monotonic()
        while not shutdown.is_set():
            try:
                # One record per poll: it is committed as soon as its sinks are done (see the docstring).
                records = await asyncio.to_thread(consumer.poll, self.poll_timeout_s, 1)
                self.metrics.lag.update(self.group_id, consumer)
                if not self.ready and consumer.assignment():
                    self.ready = True
            except BusError as exc:
                logger.warning("reading the events failed", extra={"error": str(exc), "code": exc.name})
                await shutdown.sleep(1.0)
                continue
            told = False
            for record in records:
                finished, told_sinks = await self._notify(record, client, shutdown)
                if not finished:
                    return  # shutdown mid-delivery: not committed, read again (and not resent) next start
                told = told or told_sinks
            # At once after a delivery; else now and then (records no sink wants need no hurry: reading
            # them again costs nothing), which also puts a new group's starting point on record.
            if not told and time.monotonic() - committed_at < IDLE_COMMIT_S:
                continue
            try:
                await asyncio.to_thread(consumer.commit)
                committed_at = time.monotonic()
            except BusError as exc:  # read again after a restart; the marks keep the sinks from a repeat
                logger.warning("committing the events failed", extra={"error": str(exc), "code": exc.name})

    async def _notify(
        self, record: Record, client: httpx.AsyncClient, shutdown: ShutdownEvent
    ) -> tuple[bool, bool]:
        """Delivers one record to every sink that wants it: (finished, whether any sink wanted it);
        not finished if shutdown interrupted it."""
        try:
            event = notification_of(record)
        except ValidationError as exc:
            self.metrics.invalid.inc()
            logger.error(
                f"unreadable record on {record.topic}",
                extra={"offset": record.offset, "error": str(exc.errors()[0])},
            )
            return True, False
        wanted = [sink for sink in self.sinks if event is not None and sink.wants(event)]
        if event is None or not wanted:
            return True, False
        outcomes = await asyncio.gather(*(self._deliver(sink, event, client, shutdown) for sink in wanted))
        return Outcome.INTERRUPTED not in outcomes, True

    async def _deliver(
        self, sink: SinkConfig, event: Notification, client: httpx.AsyncClient, shutdown: ShutdownEvent
    ) -> Outcome:
        labels = {"sink": sink.name, "kind": sink.kind}
        mark = f"{sink.name}|{event.id}"
        try:
            if await self.store.was_delivered(mark):
                self.metrics.duplicates.labels(**labels).inc()
                return Outcome.DUPLICATE
        except StoreError as exc:  # better a possible repeat than a missed halt: deliver
            logger.warning("reading the delivery marks failed", extra={"error": str(exc), "sink": sink.name})
        request = request_for(sink, event)
        context = {"sink": sink.name, "sink_kind": sink.kind, "event_id": event.id, "event": event.kind}
        problem = ""
        for attempt in range(1, self.retry.attempts + 1):
            wait = self.retry.backoff(attempt)
            try:
                answer = await client.post(
                    request.url, json=request.body, headers=request.headers, timeout=self.retry.timeout_s
                )
            except httpx.HTTPError as exc:
                # The exception's type only: its text may hold the URL, which is a secret.
                problem = f"{type(exc).__name__}"
            else:
                if answer.is_success:
                    self.metrics.sent.labels(**labels).inc()
                    logger.info("notification sent", extra={**context, "attempts": attempt})
                    await self._mark(mark, sink)
                    return Outcome.SENT
                problem = f"HTTP {answer.status_code}"
                if answer.status_code not in _RETRIABLE:
                    break
                asked = retry_after_s(answer.headers.get("retry-after"))
                if answer.status_code == 429 and asked is not None:
                    wait = min(asked, self.retry.retry_after_max_s)
            if attempt == self.retry.attempts:
                break
            self.metrics.retried.labels(**labels).inc()
            logger.warning(
                "notification failed; retrying",
                extra={**context, "attempt": attempt, "problem": problem, "retry_in_s": round(wait, 3)},
            )
            if await shutdown.sleep(wait):
                return Outcome.INTERRUPTED
        self.metrics.failed.labels(**labels).inc()
        logger.error(
            "notification given up",
            extra={**context, "attempts": attempt, "problem": problem},
        )
        return Outcome.FAILED

    async def _mark(self, mark: str, sink: SinkConfig) -> None:
        try:
            await self.store.mark_delivered(mark, self.dedup_ttl_s)
        except StoreError as exc:  # the commit that follows still keeps it from a repeat, short of a crash
            logger.warning("recording the delivery failed", extra={"error": str(exc), "sink": sink.name})
