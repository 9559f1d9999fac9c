"""`tradebot feed`: the market-data feed service."""

from __future__ import annotations

import argparse
from typing import Literal

from fastapi import FastAPI
from pydantic import Field

from tradebot.adapters.bus import Bus
from tradebot.adapters.connect import PipelineSettings, run_pipeline_service
from tradebot.adapters.store import Store
from tradebot.adapters.topics import pipeline_topics
from tradebot.kit.app import readiness_of
from tradebot.kit.lifecycle import ShutdownEvent


class FeedSettings(PipelineSettings):
    service_name: str = "feed"
    feed_source: Literal["simulator", "binance"] = Field(
        default="simulator", description="Message format of the source."
    )
    feed_url: str = Field(
        default="ws://127.0.0.1:6789", pattern=r"^wss?://", description="WebSocket URL of the source."
    )
    symbols: str = Field(
        default="", description="Comma-separated symbols to subscribe to (empty: all the source has)."
    )
    feed_backoff_initial_s: float = Field(default=0.2, gt=0, le=60)
    feed_backoff_max_s: float = Field(default=30.0, gt=0, le=3600)

    def symbol_list(self) -> list[str]:
        return [s.strip() for s in self.symbols.split(",") if s.strip()]


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Connects to TRADEBOT_FEED_URL and publishes validated ticks to Kafka (see TRADEBOT_* settings)."
    )


async def run_feed(
    settings: FeedSettings, bus: Bus, store: Store, shutdown: ShutdownEvent, app: FastAPI
) -> None:
    from tradebot.feed.client import Feed, FeedMetrics
    from tradebot.feed.codecs import codec_for

    await _ensure_topics(bus, settings)
    producer = bus.producer(f"{settings.service_name}")
    feed = Feed(
        codec=codec_for(settings.feed_source),
        url=settings.feed_url,
        symbols=settings.symbol_list(),
        producer=producer,
        store=store,
        metrics=FeedMetrics(app.state.registry),
        backoff_initial_s=settings.feed_backoff_initial_s,
        backoff_max_s=settings.feed_backoff_max_s,
    )

    async def source_connected() -> bool:
        return feed.connected

    readiness_of(app).add_check("source", source_connected)
    try:
        await feed.run(shutdown)
    finally:
        producer.close()


async def _ensure_topics(bus: Bus, settings: PipelineSettings) -> None:
    import asyncio

    await asyncio.to_thread(bus.ensure_topics, pipeline_topics(settings.topic_partitions))


def run(args: argparse.Namespace) -> int:
    del args
    return run_pipeline_service(FeedSettings, run_feed)
