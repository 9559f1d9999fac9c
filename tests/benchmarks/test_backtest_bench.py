"""`make bench`: the backtester against vectorbt and backtesting.py, in the same process, same data.

Prints bars/s and ratios; the figures go in the closing note. Run with `make bench`
(pytest tests/benchmarks -s --benchmarks). Targets from the issue: >= 10x vectorbt and >= 300x
backtesting.py for one backtest, 10M bars under 1.5 GB peak RSS, a 1,000-combination sweep >= 50x
vectorbt's own sweep and (issue 17) >= 300M bar-combinations/s over 1M bars on 2 cores, under 2 GB.
"""

from __future__ import annotations

import gc
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tradebot.backtest.data import synthetic_ohlcv
from tradebot.backtest.engine import BacktestConfig
from tradebot.backtest.kernel import Arrays, run_kernel
from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams

CONFIG = BacktestConfig(
    params=StrategyParams(short_window=10, long_window=30, stop_loss_pct=2, qty_step=0),
    costs=Costs(commission_pct=0.1),
    fill="close",
)


# Issue 17: a 1,000-combination sweep over 1M bars at >= 300M bar-combinations/s on 2 cores, under 2 GB.
SWEEP_TARGET = 300e6
SWEEP_MEMORY_LIMIT_MB = 2048


def best_of(runs: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ours(bars: pd.DataFrame | Arrays) -> None:
    run_kernel(bars, CONFIG)


def vectorbt_run(close: pd.Series) -> Any:
    import vectorbt as vbt

    fast = vbt.MA.run(close, 10)
    slow = vbt.MA.run(close, 30)
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    return vbt.Portfolio.from_signals(
        close, entries, exits, sl_stop=0.02, fees=0.001, init_cash=10_000, freq="1min"
    )


def backtesting_run(bars: pd.DataFrame) -> Any:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    def sma(values: Any, n: int) -> Any:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 30)

        def next(self) -> None:
            price = self.data.Close[-1]
            if crossover(self.fast, self.slow):
                self.position.close()
                self.buy(sl=price * 0.98)
            elif crossover(self.slow, self.fast):
                self.position.close()

    frame = bars.rename(columns=str.capitalize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(frame, SmaCross, cash=1e12, commission=0.001, trade_on_close=True).run()


def vectorbt_sweep(vbt: Any, close: pd.Series, pairs: list[tuple[int, int]]) -> Any:
    fast = vbt.MA.run(close, [s for s, _ in pairs], short_name="fast")
    slow = vbt.MA.run(close, [lw for _, lw in pairs], short_name="slow")
    entries = fast.ma_crossed_above(slow)
    exits = fast.ma_crossed_below(slow)
    portfolio = vbt.Portfolio.from_signals(
        close, entries, exits, sl_stop=0.02, fees=0.001, init_cash=10_000, freq="1min"
    )
    return portfolio.sharpe_ratio()


@pytest.mark.parametrize("n_bars", [1_000_000, 10_000_000])
def test_single_backtest_speed(n_bars: int) -> None:
    vectorbt = pytest.importorskip("vectorbt")
    del vectorbt
    bars = synthetic_ohlcv(n_bars, seed=1, freq="1min")
    arrays = Arrays.from_frame(bars)
    ours(arrays.__class__.from_frame(bars.iloc[:1000]))  # compile outside the timing
    t_ours = best_of(3, lambda: ours(arrays))
    lines = [
        f"\n== one backtest, SMA(10/30) + 2% stop, {n_bars:,} bars ==",
        f"tradebot kernel      {t_ours:8.3f} s  {n_bars / t_ours:14,.0f} bars/s",
    ]
    if n_bars <= 1_000_000:
        close = bars["close"]
        vectorbt_run(close.iloc[:1000])
        t_vbt = best_of(2, lambda: vectorbt_run(close))
        lines.append(
            f"vectorbt             {t_vbt:8.3f} s  {n_bars / t_vbt:14,.0f} bars/s  -> tradebot is {t_vbt / t_ours:,.1f}x"
        )
        slice_n = 200_000
        t_bt = best_of(1, lambda: backtesting_run(bars.iloc[:slice_n]))
        t_ours_slice = best_of(3, lambda: ours(bars.iloc[:slice_n]))
        lines.append(
            f"backtesting.py       {t_bt:8.3f} s  {slice_n / t_bt:14,.0f} bars/s on {slice_n:,} bars "
            f"-> tradebot is {t_bt / t_ours_slice:,.0f}x"
        )
    if n_bars == 10_000_000:
        # Peak memory of a process that only loads the bars and backtests them (generating the synthetic
        # series above needs temporaries that a real run from a file would not).
        peak = peak_rss_of_backtest(bars)
        lines.append(
            f"peak RSS of a separate process loading and backtesting {n_bars:,} bars: {peak:,.0f} MB"
        )
        assert peak < 1536, f"peak RSS {peak:.0f} MB"
    print("\n".join(lines))


def peak_rss_of_backtest(bars: pd.DataFrame) -> float:
    return peak_rss_of(bars, "result = run_kernel(arrays, CONFIG)\nprint(len(result.trades))")[-1]


def sweep_in_a_process(
    bars: pd.DataFrame, grid: dict[str, list[int]]
) -> tuple[int, bool, float, float, float]:
    """The sweep of `grid` in a process of its own, as a user runs it (make bench's pytest process holds
    gigabytes of earlier benchmarks' bars and vectorbt's threads: the same sweep took 40% more CPU in it):
    (combinations, whether any Sharpe is finite, seconds, CPU-seconds, peak RSS MB)."""
    warm = "small = Arrays(*(getattr(arrays, f.name)[:2000] for f in dataclasses.fields(Arrays)))\n"
    warm += "run_sweep(small, CONFIG, {'short_window': [5], 'long_window': [60]})"
    work = f"result = run_sweep(arrays, CONFIG, {grid!r}, metric='sharpe')\n"
    work += "print(len(result.table), int(np.isfinite(result.table['sharpe']).any()))"
    out = peak_rss_of(bars, work, warm)
    combos, finite, seconds, cpu, peak = out[-5:]
    return int(combos), bool(finite), seconds, cpu, peak


def peak_rss_of(bars: pd.DataFrame, work: str, warm: str = "") -> list[float]:
    """A separate process that loads `bars` from .npy files, runs `warm` (compiling, untimed), then `work` on
    `arrays` (generating the synthetic series here needs temporaries a real run from a file would not): what
    `work` printed, then its seconds, its CPU-seconds and the process's peak RSS (MB)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        np.save(
            path / "ts.npy",
            pd.DatetimeIndex(bars.index).as_unit("ns").to_numpy(dtype="datetime64[ns]").view(np.int64),
        )
        for name in ("open", "high", "low", "close"):
            np.save(path / f"{name}.npy", bars[name].to_numpy())
        code = f"""
import numpy as np, pandas as pd
from tradebot.backtest.kernel import Arrays, run_kernel
from tradebot.backtest.sweep import run_sweep
from tradebot.backtest.engine import BacktestConfig
from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams
CONFIG = BacktestConfig(
    params=StrategyParams.model_validate_json({CONFIG.params.model_dump_json()!r}),
    costs=Costs.model_validate_json({CONFIG.costs.model_dump_json()!r}),
    fill={CONFIG.fill!r},
)
ts, o, h, l, c = (np.load(f"{path}/{{name}}.npy") for name in ("ts", "open", "high", "low", "close"))
index = pd.DatetimeIndex(ts.view("datetime64[ns]"), tz="UTC")
arrays = Arrays.of(index, ts, o, h, l, c)
del ts
import dataclasses, os, time
{warm}
started, cpu = time.perf_counter(), os.times()
{work}
took, done = time.perf_counter() - started, os.times()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (big) parent.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(took, done.user - cpu.user + done.system - cpu.system, int(hwm) / 1024)
"""
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return [float(value) for value in out.stdout.split()]


def test_sweep_speed() -> None:
    vbt = pytest.importorskip("vectorbt")
    n_bars = 1_000_000
    bars = synthetic_ohlcv(n_bars, seed=2, freq="1min")
    shorts = list(range(5, 55, 2))  # 25
    longs = list(range(60, 260, 5))  # 40 -> 1,000 combinations
    grid = {"short_window": shorts, "long_window": longs}
    # On a shared machine the wall-clock rate says how busy it was; the rate per CPU-second does not.
    combos, finite, t_ours, t_cpu, peak = sweep_in_a_process(bars, grid)
    assert combos == len(shorts) * len(longs)

    # vectorbt's own sweep idiom: one wide run over window pairs (columns), on a sample of the grid
    # (the full 1,000 columns x 1M bars would not fit in memory), compared per bar-combination.
    close = bars["close"]
    pairs = [(s, lw) for s in shorts[:5] for lw in longs[:4]]
    vectorbt_sweep(vbt, close.iloc[:1000], pairs[:2])
    start = time.perf_counter()
    vectorbt_sweep(vbt, close, pairs)
    t_vbt = time.perf_counter() - start
    vbt_combos = len(pairs)
    ours_rate = combos * n_bars / t_ours
    vbt_rate = vbt_combos * n_bars / t_vbt
    print(
        f"\n== sweep of {combos:,} combinations over {n_bars:,} bars, {os.cpu_count()} cores ==\n"
        f"tradebot  {t_ours:8.2f} s  {ours_rate:16,.0f} bar-combinations/s (a process of its own)"
        f"  ({ours_rate / SWEEP_TARGET:.2f}x the target of {SWEEP_TARGET:,.0f})\n"
        f"          {t_cpu:8.2f} CPU-s  {combos * n_bars / t_cpu:16,.0f} bar-combinations per CPU-second"
        f" (load average {os.getloadavg()[0]:.1f})\n"
        f"vectorbt  {t_vbt:8.2f} s for {vbt_combos} combinations  {vbt_rate:16,.0f} bar-combinations/s\n"
        f"ratio     tradebot is {ours_rate / vbt_rate:,.1f}x vectorbt per bar-combination\n"
        f"peak RSS of that process, which loaded the bars and swept them: {peak:,.0f} MB"
        f" (limit {SWEEP_MEMORY_LIMIT_MB:,} MB)"
    )
    assert finite
    assert peak < SWEEP_MEMORY_LIMIT_MB, f"peak RSS {peak:.0f} MB"
