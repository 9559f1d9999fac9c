"""`tradebot strategy`: one running strategy (id, symbols and parameters from the environment)."""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import Field

from tradebot.adapters.bus import Bus
from tradebot.adapters.connect import PipelineSettings, run_pipeline_service
from tradebot.adapters.store import Store
from tradebot.adapters.topics import pipeline_topics
from tradebot.core.models import Identifier
from tradebot.core.params import StrategyParams
from tradebot.kit.app import readiness_of
from tradebot.kit.lifecycle import ShutdownEvent


class StrategySettings(PipelineSettings):
    service_name: str = "strategy"
    strategy_id: Identifier = Field(
        default="sma-default", description="Names the consumer group, transactions and state."
    )
    strategy_symbols: str = Field(
        default="AAPL,MSFT,GOOG,AMZN,TSLA", min_length=1, description="Comma-separated symbols."
    )
    strategy_params: StrategyParams = Field(
        default_factory=StrategyParams,
        description="JSON of the strategy parameters (camelCase or snake_case).",
    )
    strategy_initial_cash: float = Field(default=10_000.0, gt=0)
    strategy_batch_max: int = Field(default=5000, ge=1, le=100_000)

    def symbol_list(self) -> list[str]:
        return [s.strip() for s in self.strategy_symbols.split(",") if s.strip()]


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Runs TRADEBOT_STRATEGY_ID over TRADEBOT_STRATEGY_SYMBOLS with TRADEBOT_STRATEGY_PARAMS."
    )


async def run_strategy(
    settings: StrategySettings, bus: Bus, store: Store, shutdown: ShutdownEvent, app: FastAPI
) -> None:
    import asyncio

    from tradebot.strategy.runner import StrategyMetrics, StrategyRunner

    await asyncio.to_thread(bus.ensure_topics, pipeline_topics(settings.topic_partitions))
    runner = StrategyRunner(
        strategy_id=settings.strategy_id,
        symbols=settings.symbol_list(),
        params=settings.strategy_params,
        costs=settings.costs(),
        initial_cash=settings.strategy_initial_cash,
        bus=bus,
        store=store,
        metrics=StrategyMetrics(app.state.registry),
        batch_max=settings.strategy_batch_max,
    )

    async def running() -> bool:
        return runner.ready

    readiness_of(app).add_check(f"strategy-{settings.strategy_id}", running)
    await runner.run(shutdown)


def run(args: argparse.Namespace) -> int:
    del args
    return run_pipeline_service(StrategySettings, run_strategy)
