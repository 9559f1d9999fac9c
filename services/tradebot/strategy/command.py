"""`tradebot strategy`: one running strategy (id, symbols and parameters from the environment)."""

from __future__ import annotations

import argparse

from pydantic import Field

from tradebot.adapters.connect import PipelineSettings, Wiring, run_pipeline_service
from tradebot.adapters.topics import pipeline_topics
from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.models import Identifier
from tradebot.core.params import StrategyParams
from tradebot.kit.settings import comma_list


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
    strategy_initial_cash: float = Field(default=DEFAULT_INITIAL_CASH, gt=0)
    strategy_batch_max: int = Field(default=5000, ge=1, le=100_000)
    strategy_bar_lateness_s: float | None = Field(
        default=None,
        ge=0,
        le=3600,
        description=(
            "Bar timeframes: also close a bar on the clock this many seconds after its bucket ended (a live"
            " source that goes quiet); unset, bars close when a later tick arrives (event time, replays)."
        ),
    )

    def symbol_list(self) -> list[str]:
        return comma_list(self.strategy_symbols)


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Runs TRADEBOT_STRATEGY_ID over TRADEBOT_STRATEGY_SYMBOLS with TRADEBOT_STRATEGY_PARAMS."
    )


async def run_strategy(settings: StrategySettings, wiring: Wiring) -> None:
    import asyncio

    from tradebot.strategy.runner import StrategyMetrics, StrategyRunner

    await asyncio.to_thread(wiring.bus.ensure_topics, pipeline_topics(settings.topic_partitions))
    runner = StrategyRunner(
        strategy_id=settings.strategy_id,
        symbols=settings.symbol_list(),
        params=settings.strategy_params,
        costs=settings.costs(),
        initial_cash=settings.strategy_initial_cash,
        bus=wiring.bus,
        store=wiring.store,
        metrics=StrategyMetrics.of(wiring.registry),
        batch_max=settings.strategy_batch_max,
        bar_lateness_s=settings.strategy_bar_lateness_s,
    )

    async def running() -> bool:
        return runner.ready

    wiring.readiness.add_check(f"strategy-{settings.strategy_id}", running)
    await runner.run(wiring.shutdown)


def run(args: argparse.Namespace) -> int:
    del args
    return run_pipeline_service(StrategySettings, run_strategy)
