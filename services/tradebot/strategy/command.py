"""`tradebot strategy`: one running strategy (id, symbols and parameters from the environment)."""

from __future__ import annotations

import argparse

from pydantic import Field, field_validator

from tradebot.adapters.connect import PipelineSettings, Wiring, run_pipeline_service
from tradebot.adapters.topics import pipeline_topics
from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.errors import TradebotError
from tradebot.core.models import Identifier
from tradebot.core.params import StrategyParams
from tradebot.kit.settings import comma_list


class HistoryTooShortError(TradebotError):
    """A bar strategy's moving averages still lack bars: it cannot trade the next bar's cross yet."""


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

    strategy_history: str = Field(
        default="",
        description=(
            "Bar timeframes: warm-up datasets per symbol, SYMBOL=PATH,... (CSV or Parquet as `tradebot"
            " backtest` reads); unset, a strategy starting afresh warms up from the `bars` topic."
        ),
    )

    @field_validator("strategy_history")
    @classmethod
    def _symbol_equals_path(cls, value: str) -> str:
        for item in comma_list(value):
            symbol, sep, path = item.partition("=")
            if not (symbol and sep and path):
                raise ValueError(f"{item!r} is not SYMBOL=PATH")
        return value

    def history_files(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in comma_list(self.strategy_history))

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
        history_files=settings.history_files(),
    )

    async def running() -> bool:
        return runner.ready

    async def warmed_up() -> bool:
        short = runner.history_short()
        if short:  # readiness names it: "history too short: GOOG: 12 of 200 1m bars"
            raise HistoryTooShortError("history too short: " + "; ".join(short))
        return True

    wiring.readiness.add_check(f"strategy-{settings.strategy_id}", running)
    if settings.strategy_params.timeframe != "tick":
        wiring.readiness.add_check(f"strategy-{settings.strategy_id}-history", warmed_up)
    await runner.run(wiring.shutdown)


def run(args: argparse.Namespace) -> int:
    del args
    return run_pipeline_service(StrategySettings, run_strategy)
