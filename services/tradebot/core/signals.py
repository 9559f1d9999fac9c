"""Entry and exit signals: two moving averages and their cross.

`cross` is a rule function (see `tradebot.core.rules`): the backtest kernel compiles this very
function. `Crossover` keeps the averages' state between prices for the live strategy and the
reference backtest; the kernel computes the averages over whole arrays instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from tradebot.core.indicators import MovingAverage
from tradebot.core.params import StrategyParams

UP: Final = 1
DOWN: Final = -1
NO_CROSS: Final = 0


def cross(prev_short: float, prev_long: float, short: float, long: float) -> int:
    """UP when the short average crosses above the long one, DOWN below, else NO_CROSS.

    A cross is `prev_short < prev_long and short > long` (mirror for down), backtesting.py's
    definition: touching without crossing is none, and NaN (averages still warming up) never crosses."""
    if prev_short < prev_long and short > long:
        return UP
    if prev_short > prev_long and short < long:
        return DOWN
    return NO_CROSS


@dataclass
class Crossover:
    """The short and long moving averages of one symbol, and their values at the previous price."""

    short_ma: MovingAverage
    long_ma: MovingAverage
    prev_short: float = math.nan
    prev_long: float = math.nan

    @classmethod
    def of(cls, params: StrategyParams) -> Crossover:
        return cls(
            MovingAverage(params.ma_type, params.short_window),
            MovingAverage(params.ma_type, params.long_window),
        )

    def update(self, price: float) -> tuple[float, float, int]:
        """Takes one price: (short average, long average, cross direction)."""
        short = self.short_ma.update(price)
        long = self.long_ma.update(price)
        direction = cross(self.prev_short, self.prev_long, short, long)
        self.prev_short, self.prev_long = short, long
        return short, long, direction
