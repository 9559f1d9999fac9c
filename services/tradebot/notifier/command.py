"""`tradebot notifier`: fills and control events (halt, resume, force-exit, close-all) posted to webhooks."""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import Field, field_validator

from tradebot.adapters.connect import PipelineSettings, Wiring, run_pipeline_service
from tradebot.adapters.topics import pipeline_topics
from tradebot.notifier.sinks import SinkConfig


class NotifierSettings(PipelineSettings):
    service_name: str = "notifier"
    notifier_sinks: list[SinkConfig] = Field(
        default_factory=list,
        description='JSON list of sinks, e.g. [{"name": "ops", "kind": "slack", "url": "https://...", '
        '"strategies": ["fast"], "events": ["halt", "stop-out"]}]; kinds webhook, slack, discord, telegram '
        "(bot_token, chat_id). A secret: URLs and tokens are never shown.",
    )
    notifier_group: str = Field(
        default="notifier", pattern=r"^[A-Za-z0-9._-]{1,200}$", description="The Kafka consumer group."
    )
    notifier_start: Literal["latest", "earliest"] = Field(
        default="latest",
        description="Where a group with no committed position starts: latest (only new events; a first "
        "start does not replay the history) or earliest.",
    )
    notifier_max_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per sink and event.")
    notifier_backoff_initial_s: float = Field(
        default=0.5, gt=0, le=60, description="First wait between attempts; doubles each time."
    )
    notifier_backoff_max_s: float = Field(
        default=30.0, gt=0, le=60, description="Longest wait between attempts."
    )
    notifier_retry_after_max_s: float = Field(
        default=30.0, gt=0, le=60, description="Longest a 429's Retry-After is waited for."
    )
    notifier_timeout_s: float = Field(default=10.0, gt=0, le=60, description="Timeout of one HTTP request.")
    notifier_dedup_ttl_s: int = Field(
        default=7 * 86_400,
        ge=60,
        description="How long a delivery mark is kept in Redis (a restart within it sends nothing twice).",
    )

    @field_validator("notifier_sinks")
    @classmethod
    def _unique_sink_names(cls, sinks: list[SinkConfig]) -> list[SinkConfig]:
        names = [sink.name for sink in sinks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"sink names must be unique (repeated: {', '.join(repeated)})")
        return sinks


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Posts fills and control events from Kafka to webhooks, Slack, Discord and Telegram "
        "(TRADEBOT_NOTIFIER_SINKS); delivery marks in Redis."
    )


async def run_notifier(settings: NotifierSettings, wiring: Wiring) -> None:
    import asyncio

    from tradebot.notifier.runner import NotifierMetrics, NotifierRunner, Retry

    await asyncio.to_thread(wiring.bus.ensure_topics, pipeline_topics(settings.topic_partitions))
    runner = NotifierRunner(
        bus=wiring.bus,
        store=wiring.store,
        sinks=settings.notifier_sinks,
        metrics=NotifierMetrics.of(wiring.registry),
        retry=Retry(
            attempts=settings.notifier_max_attempts,
            initial_s=settings.notifier_backoff_initial_s,
            max_s=settings.notifier_backoff_max_s,
            retry_after_max_s=settings.notifier_retry_after_max_s,
            timeout_s=settings.notifier_timeout_s,
        ),
        group_id=settings.notifier_group,
        start=settings.notifier_start,
        dedup_ttl_s=settings.notifier_dedup_ttl_s,
    )

    async def consuming() -> bool:
        return runner.ready

    wiring.readiness.add_check("notifier", consuming)
    await runner.run(wiring.shutdown)


def run(args: argparse.Namespace) -> int:
    del args
    return run_pipeline_service(NotifierSettings, run_notifier)
