"""`tradebot executor`: the paper broker."""

from __future__ import annotations

import argparse

from pydantic import Field

from tradebot.adapters.connect import PipelineSettings, Wiring, run_pipeline_service
from tradebot.adapters.topics import pipeline_topics
from tradebot.core.defaults import DEFAULT_INITIAL_CASH


class ExecutorSettings(PipelineSettings):
    service_name: str = "executor"
    executor_max_order_qty: float | None = Field(default=None, gt=0)
    executor_max_order_notional: float | None = Field(default=None, gt=0)
    executor_price_band_pct: float | None = Field(
        default=None,
        gt=0,
        description="Refuse orders this far (percent) from the last price; unset: off (replays run ahead of event time).",
    )
    executor_initial_cash: float = Field(
        default=DEFAULT_INITIAL_CASH,
        gt=0,
        description="Initial cash of a strategy that registered none (each registers its own TRADEBOT_STRATEGY_INITIAL_CASH).",
    )
    executor_batch_max: int = Field(
        default=2000, ge=1, le=100_000, description="Orders one transaction takes at most."
    )
    executor_seen_orders: int = Field(
        default=100_000,
        ge=1000,
        le=10_000_000,
        description="Newest order ids remembered to drop a repeated order (bounded; see services/README.md).",
    )


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Fills orders from Kafka as a paper broker; order log, positions and P&L in Redis."


async def run_executor(settings: ExecutorSettings, wiring: Wiring) -> None:
    import asyncio

    from tradebot.executor.broker import PaperBroker, RiskChecks
    from tradebot.executor.runner import ExecutorMetrics, ExecutorRunner

    await asyncio.to_thread(wiring.bus.ensure_topics, pipeline_topics(settings.topic_partitions))
    broker = PaperBroker(
        costs=settings.costs(),
        checks=RiskChecks(
            max_order_qty=settings.executor_max_order_qty,
            max_order_notional=settings.executor_max_order_notional,
            price_band_pct=settings.executor_price_band_pct,
        ),
        seen_max=settings.executor_seen_orders,
    )
    runner = ExecutorRunner(
        bus=wiring.bus,
        store=wiring.store,
        broker=broker,
        metrics=ExecutorMetrics.of(wiring.registry),
        initial_cash=settings.executor_initial_cash,
        batch_max=settings.executor_batch_max,
        signals_maxlen=settings.redis_stream_maxlen,
    )

    async def running() -> bool:
        return runner.ready

    wiring.readiness.add_check("executor", running)
    await runner.run(wiring.shutdown)


def run(args: argparse.Namespace) -> int:
    del args
    return run_pipeline_service(ExecutorSettings, run_executor)
