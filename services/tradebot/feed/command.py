"""`tradebot feed`: the market-data feed service."""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import Field

from tradebot.adapters.connect import PipelineSettings, Wiring, run_pipeline_service
from tradebot.adapters.topics import pipeline_topics
from tradebot.kit.settings import comma_list


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
    feed_linger_ms: int = Field(
        default=5,
        ge=0,
        le=1000,
        description=(
            "How long ticks wait to be sent to Kafka together (librdkafka's linger.ms). At 5k ticks/s, 1 ms"
            " made about a thousand produce requests a second, the broker's largest load; 5 ms makes a fifth"
            " of them for at most 5 ms more per tick."
        ),
    )
    feed_max_queued: int = Field(
        default=50_000,
        ge=1,
        le=1_000_000,
        description="Records waiting for Kafka at most; at the bound the source is paused (backpressure).",
    )

    def symbol_list(self) -> list[str]:
        return comma_list(self.symbols)


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Connects to TRADEBOT_FEED_URL and publishes validated ticks to Kafka (see TRADEBOT_* settings)."
    )


async def run_feed(settings: FeedSettings, wiring: Wiring) -> None:
    import asyncio

    from tradebot.feed.client import Feed, FeedMetrics
    from tradebot.feed.codecs import codec_for

    await asyncio.to_thread(wiring.bus.ensure_topics, pipeline_topics(settings.topic_partitions))
    producer = wiring.bus.producer(settings.service_name, linger_ms=settings.feed_linger_ms)
    feed = Feed(
        codec=codec_for(settings.feed_source),
        url=settings.feed_url,
        symbols=settings.symbol_list(),
        producer=producer,
        store=wiring.store,
        metrics=FeedMetrics.of(wiring.registry),
        backoff_initial_s=settings.feed_backoff_initial_s,
        backoff_max_s=settings.feed_backoff_max_s,
        max_queued=settings.feed_max_queued,
        # The flush gets most of the grace period; the price cache write and closing need the rest.
        flush_timeout_s=max(0.5, settings.shutdown_grace_seconds * 0.8),
    )

    async def source_connected() -> bool:
        return feed.connected

    wiring.readiness.add_check("source", source_connected)
    try:
        await feed.run(wiring.shutdown)
    finally:
        producer.close()


def run(args: argparse.Namespace) -> int:
    del args
    return run_pipeline_service(FeedSettings, run_feed)
