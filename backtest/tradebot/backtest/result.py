"""One backtest, end to end: engine output plus the statistics traders read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from tradebot.backtest.engine import BacktestConfig, RawResult, run_reference, run_ticks
from tradebot.backtest.kernel import Arrays, run_kernel
from tradebot.backtest.metrics import compute_stats

if TYPE_CHECKING:
    from tradebot.backtest.data import Bars, MarketData

Engine = Literal["kernel", "reference"]


@dataclass(frozen=True)
class BacktestResult:
    config: BacktestConfig
    raw: RawResult
    close: np.ndarray
    stats: dict[str, Any]
    # Why the run is on this timeframe when it was chosen for the user (`--timeframe auto`), else None.
    timeframe_why: str | None = None

    @property
    def trades(self) -> pd.DataFrame:
        return self.raw.trades

    def setup_line(self) -> str:
        """The choices that decide how the same data trades, in one line for the reports."""
        params = self.config.params
        why = "" if self.timeframe_why is None else f" ({self.timeframe_why})"
        return (
            f"timeframe {params.timeframe}{why}, fill {self.config.fill}, exit rule {params.exit_rule}"
            " (when one bar reaches both the stop and the take-profit)"
        )

    def params_dict(self) -> dict[str, Any]:
        return {
            **self.config.params.model_dump(mode="json"),
            **self.config.costs.model_dump(mode="json"),
            "initial_cash": self.config.initial_cash,
            "fill": self.config.fill,
            "timeframe_why": self.timeframe_why,
        }


def run_backtest(bars: pd.DataFrame, config: BacktestConfig, engine: Engine = "kernel") -> BacktestResult:
    raw = run_kernel(bars, config) if engine == "kernel" else run_reference(bars, config)
    return _with_stats(raw, bars["close"].to_numpy(dtype=np.float64), config)


def _with_stats(raw: RawResult, close: np.ndarray, config: BacktestConfig) -> BacktestResult:
    stats = compute_stats(raw.equity, raw.index, raw.trades, close, config.initial_cash)
    return BacktestResult(config=config, raw=raw, close=close, stats=stats)


def run_tick_backtest(
    ts: np.ndarray, price: np.ndarray, size: np.ndarray, config: BacktestConfig
) -> BacktestResult:
    """Tick data on a bar timeframe: signals on the bars, stops on the ticks (as the live strategy)."""
    bars, raw = run_ticks(ts, price, size, config)
    return _with_stats(raw, bars.close, config)


def run_market_data(
    data: MarketData, bars: Bars, config: BacktestConfig, engine: Engine = "kernel"
) -> BacktestResult:
    """The backtest `tradebot backtest` runs on a file's `data`, `bars` being it at the config's timeframe
    (`data.at_timeframe`): tick data on a bar timeframe filled at the close trades as the live strategy
    (signals on the bars, stops on the ticks: backtest/README.md); anything else runs over `bars`."""
    from tradebot.backtest.data import Ticks

    if isinstance(data, Ticks) and config.params.timeframe != "tick" and config.fill == "close":
        return run_tick_backtest(data.ts, data.price, data.size, config)
    if engine == "reference":
        return run_backtest(bars.frame(), config, engine=engine)
    # The kernel straight over the columns: no frame, whose index alone is one more copy of the stamps.
    arrays = Arrays.of(bars.index(), bars.ts, bars.open, bars.high, bars.low, bars.close)
    return _with_stats(run_kernel(arrays, config), arrays.close, config)
