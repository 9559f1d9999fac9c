"""The reference backtest: replays bars through the very `CrossoverStrategy` the live service runs.

It is slow by design (one Python call per bar) and is the definition of correct: the fast kernel
must reproduce its trades exactly. Fill models, with no look-ahead:
- `close`: every decision is made and filled at the bar's close (what the live pipeline does per tick);
- `next-open`: decisions at the close fill at the next bar's open.
Stops watch each bar's range (open, high, low) and fill at the stop level, or at the open when the bar
gapped through it, under `next-open` and whenever the parameters name a bar timeframe (`1s` ... `1d`):
with timeframe `tick` and `close` fills every row is one price, as the live strategy sees a tick.
A bar that reaches both the stop and the take-profit exits by the parameters' `exit_rule`.

`run_ticks` is the backtest of tick data on a bar timeframe, as the live strategy trades it: the ticks
go one by one through `CrossoverStrategy.on_tick`, which builds the bars (the same `BarBuilder`),
decides on their closes and checks the stops on every tick (no exit rule needed: the order is known).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from tradebot.backtest.trades import TradeLog, trades_frame
from tradebot.core.bars import TICK, Bar, BarArrays, aggregate, timeframe_ns
from tradebot.core.costs import Costs
from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.models import OrderReason, OrderRequest, Side
from tradebot.core.params import StrategyParams
from tradebot.core.strategy import CrossoverStrategy

FillModel = Literal["close", "next-open"]
FILL_MODELS: tuple[str, ...] = ("close", "next-open")


@dataclass(frozen=True)
class BacktestConfig:
    params: StrategyParams
    costs: Costs = field(default_factory=Costs)
    initial_cash: float = DEFAULT_INITIAL_CASH
    fill: FillModel = "close"
    symbol: str = "ASSET"

    @property
    def stops_see_bar_range(self) -> bool:
        """Whether stops are checked against each bar's open, high and low before its close (else at
        the close only, a bar being one price: the `tick` timeframe filled at the close)."""
        return self.fill == "next-open" or self.params.timeframe != TICK


@dataclass(frozen=True)
class RawResult:
    """What an engine produced: per-bar equity and MAs, and the closed trades."""

    index: pd.DatetimeIndex
    equity: np.ndarray
    short_ma: np.ndarray
    long_ma: np.ndarray
    trades: pd.DataFrame


def run_reference(bars: pd.DataFrame, config: BacktestConfig) -> RawResult:
    index = pd.DatetimeIndex(bars.index)
    opens = bars["open"].to_numpy(dtype=np.float64)
    highs = bars["high"].to_numpy(dtype=np.float64)
    lows = bars["low"].to_numpy(dtype=np.float64)
    closes = bars["close"].to_numpy(dtype=np.float64)
    n = len(closes)
    strategy = CrossoverStrategy("backtest", config.params, config.costs, config.initial_cash)
    costs = config.costs
    symbol = config.symbol
    log = TradeLog()
    equity = np.empty(n)
    short_ma = np.empty(n)
    long_ma = np.empty(n)
    timestamps = index.to_pydatetime()

    def fill(bar: int, order: OrderRequest, price: float) -> None:
        executed, fee = costs.execute(order.side.sign, order.qty, price)
        strategy.on_fill(order.side, order.qty, executed, fee, symbol)
        log.record(bar, order.side.sign, order.qty, executed, fee, order.reason)

    pending: list[OrderRequest] = []
    next_open = config.fill == "next-open"
    bar_range = config.stops_see_bar_range
    for i in range(n):
        ts = timestamps[i]
        cause = f"bar:{i}"
        for order in pending:
            fill(i, order, float(opens[i]))
        if bar_range:
            for order in strategy.on_intrabar(
                symbol, float(opens[i]), float(highs[i]), float(lows[i]), ts, cause
            ):
                fill(i, order, order.ref_price)
        step = strategy.on_price(symbol, float(closes[i]), ts, cause, check_stops=not bar_range)
        if next_open:
            pending = step.orders
        else:
            for order in step.orders:
                fill(i, order, order.ref_price)
        short_ma[i] = step.short_ma
        long_ma[i] = step.long_ma
        equity[i] = strategy.equity()

    trades = _close_and_tabulate(strategy, config, log, index, float(closes[-1]) if n else 0.0, equity)
    return RawResult(index=index, equity=equity, short_ma=short_ma, long_ma=long_ma, trades=trades)


def run_ticks(
    ts: np.ndarray, price: np.ndarray, size: np.ndarray, config: BacktestConfig
) -> tuple[BarArrays, RawResult]:
    """Ticks (epoch ns, price, size) on the parameters' bar timeframe: signals on the bars' closes, filled
    there (`close`), stops on every tick, filled at the tick that reached them. The bars are the
    aggregate of the ticks; the last one closes at the end of the data. Trades name the bar each fill
    fell in (entries: the bar whose close crossed; stop exits: the bar their tick belongs to)."""
    if config.fill != "close":
        raise ValueError("tick data on a bar timeframe fills at the bar's close (--fill close) only")
    length = timeframe_ns(config.params.timeframe)
    bars = aggregate(ts, price, price, price, price, size, length)
    n = len(bars.ts)
    strategy = CrossoverStrategy("backtest", config.params, config.costs, config.initial_cash)
    costs, symbol, log = config.costs, config.symbol, TradeLog()
    equity, short_ma, long_ma = np.empty(n), np.full(n, np.nan), np.full(n, np.nan)
    bar = 0  # the bar the current tick falls in: bars closed so far

    def fill(order: OrderRequest) -> None:
        executed, fee = costs.execute(order.side.sign, order.qty, order.ref_price)
        strategy.on_fill(order.side, order.qty, executed, fee, symbol)
        log.record(bar, order.side.sign, order.qty, executed, fee, order.reason)

    def close_bar(last: Bar) -> None:
        step = strategy.on_bar_close(symbol, last)
        for order in step.orders:
            fill(order)
        short_ma[bar], long_ma[bar] = step.short_ma, step.long_ma
        equity[bar] = strategy.equity()

    builder = strategy.state(symbol).bars
    assert builder is not None  # a bar timeframe
    stamps = pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC").to_pydatetime()
    # The same steps as `CrossoverStrategy.on_tick`, apart so that each fill names its bar: a tick of a
    # later bucket closes the bar (filled in that bar), then its own stops are checked (in the next).
    for i, (tick_ns, tick_price, tick_size) in enumerate(
        zip(ts.tolist(), price.tolist(), size.tolist(), strict=True)
    ):
        last = builder.on_tick(tick_ns, tick_price, tick_size)
        if last is not None:
            close_bar(last)
            bar += 1
        for order in strategy.on_tick_stops(symbol, tick_price, stamps[i], f"tick:{i}"):
            fill(order)
    last = builder.flush()
    if last is not None:
        close_bar(last)
    index = pd.DatetimeIndex(bars.ts.view("datetime64[ns]"), tz="UTC")
    last_close = float(bars.close[-1]) if n else 0.0
    trades = _close_and_tabulate(strategy, config, log, index, last_close, equity)
    return bars, RawResult(index=index, equity=equity, short_ma=short_ma, long_ma=long_ma, trades=trades)


def _close_and_tabulate(
    strategy: CrossoverStrategy,
    config: BacktestConfig,
    log: TradeLog,
    index: pd.DatetimeIndex,
    last_close: float,
    equity: np.ndarray,
) -> pd.DataFrame:
    """Closes a position still open at the last close (`end_of_data`) and tabulates the trade log."""
    n = len(index)
    position = strategy.book.position(config.symbol)
    if n and position != 0.0:
        side = Side.SELL if position > 0 else Side.BUY
        qty = abs(position)
        executed, fee = config.costs.execute(side.sign, qty, last_close)
        strategy.on_fill(side, qty, executed, fee, config.symbol)
        log.record(n - 1, side.sign, qty, executed, fee, OrderReason.END_OF_DATA)
        equity[-1] = strategy.equity()
    return trades_frame(
        index,
        np.array(log.entry_bar, dtype=np.int64),
        np.array(log.exit_bar, dtype=np.int64),
        np.array(log.side, dtype=np.int64),
        np.array(log.qty),
        np.array(log.entry_price),
        np.array(log.exit_price),
        np.array(log.pnl),
        np.array(log.exit_reason, dtype=np.int64),
        np.array(log.commission),
    )
