"""Parameter sweeps and walk-forward evaluation on the fast kernel.

Sweeps run the kernel once per parameter combination, in threads: the kernel releases the GIL
(`nogil=True`), so every core works without copying the data into subprocesses. Moving averages
are computed once per (type, window) and shared by every combination that uses them (65 float64
arrays for 25 short x 40 long windows). Statistics are accumulated inside the kernel, so nothing
per-bar is stored per combination, and no trade table is kept (`record=False`); the kernel is the
very one `run_kernel` runs, so every row equals a single run (`tests/backtest/test_sweep_parity.py`).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from tradebot.backtest.engine import BacktestConfig
from tradebot.backtest.kernel import Arrays, Summary, moving_average, run_kernel, simulate
from tradebot.backtest.metrics import compute_stats, infer_bars_per_year
from tradebot.core.params import StrategyParams
from tradebot.core.shards import COMBINATION
from tradebot.core.shards import RANK_METRICS as RANK_METRICS  # where `tradebot sweep` and tests find it

Progress = Callable[[int, int], None]


def parse_range(text: str, kind: type[int] | type[float] = float) -> list[Any]:
    """`5:50:5` (inclusive), `1,2,3`, or a single value."""
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, step = (kind(p) for p in parts)
            if step <= 0 or stop < start:
                raise ValueError
            count = math.floor((stop - start) / step + 1e-9) + 1
            return [kind(round(start + i * step, 10)) for i in range(count)]
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"bad range {text!r}: use START:STOP:STEP (inclusive) or a comma list") from None


def expand_grid(base: StrategyParams, grid: Mapping[str, Sequence[Any]]) -> tuple[list[StrategyParams], int]:
    """Every valid combination of `grid` over `base` (dotted names reach nested fields, e.g.
    `risk.cooldown_bars`), and how many combinations were invalid (e.g. short >= long)."""
    names = list(grid)
    combos: list[StrategyParams] = []
    invalid = 0
    base_data = base.model_dump()
    for values in itertools.product(*(grid[name] for name in names)):
        data = {key: dict(value) if isinstance(value, dict) else value for key, value in base_data.items()}
        for name, value in zip(names, values, strict=True):
            head, _, tail = name.partition(".")
            if head not in data:
                raise ValueError(f"unknown parameter {name!r}")
            if tail:
                data[head][tail] = value
            else:
                data[head] = value
        try:
            combos.append(StrategyParams.model_validate(data))
        except ValidationError:
            invalid += 1
    return combos, invalid


@dataclass(frozen=True)
class SweepResult:
    table: pd.DataFrame  # one row per combination: parameters, then metrics; ranked
    metric: str
    invalid: int
    bars: int

    def best(self) -> dict[str, Any]:
        # `head(1).to_dict` keeps each column's type (`iloc[0]` made every value a float: windows `10.0`).
        return (
            {str(k): v for k, v in self.table.head(1).to_dict("records")[0].items()}
            if len(self.table)
            else {}
        )


def summary_stats(
    summary: Summary, bars: int, initial_cash: float, bars_per_year: float, years: float
) -> dict[str, float]:
    final_equity = summary.final_equity
    max_dd = summary.max_drawdown
    ret_sum = summary.return_sum
    n_trades = summary.n_trades
    gross_loss = summary.gross_loss
    n_ret = bars
    nan = math.nan
    mean = ret_sum / n_ret if n_ret > 0 else nan
    var = (summary.return_sq_sum - ret_sum * ret_sum / n_ret) / (n_ret - 1) if n_ret > 1 else nan
    std = math.sqrt(var) if var > 0 else nan
    down_sq = summary.downside_sq_sum
    downside = math.sqrt(down_sq / n_ret) if n_ret > 0 and down_sq > 0 else nan
    total_return = final_equity / initial_cash - 1.0
    cagr = (final_equity / initial_cash) ** (1.0 / years) - 1.0 if years > 0 and final_equity > 0 else nan
    return {
        "total_return_pct": total_return * 100.0,
        "cagr_pct": cagr * 100.0,
        "sharpe": mean / std * math.sqrt(bars_per_year) if std == std else nan,
        "sortino": mean / downside * math.sqrt(bars_per_year) if downside == downside else nan,
        "max_drawdown_pct": max_dd * 100.0,
        "calmar": cagr / abs(max_dd) if max_dd < 0 and cagr == cagr else nan,
        "n_trades": int(n_trades),  # the kernel's summary holds it as a float
        "win_rate_pct": summary.wins / n_trades * 100.0 if n_trades else nan,
        "profit_factor": summary.gross_win / gross_loss if gross_loss > 0 else nan,
        "exposure_pct": summary.exposure_bars / bars * 100.0 if bars else nan,
        "equity_final": final_equity,
    }


def run_sweep(
    bars: pd.DataFrame | Arrays,
    base: BacktestConfig,
    grid: Mapping[str, Sequence[Any]],
    *,
    metric: str = "sharpe",
    jobs: int | None = None,
    progress: Progress | None = None,
    shard: tuple[int, int] | None = None,
) -> SweepResult:
    """Every combination of `grid`, ranked by `metric`. With `shard=(i, n)` only the combinations whose
    index k (in the grid's deterministic order) has k % n == i, and each row carries k as `combination`:
    n shards' rows merged and ranked by (metric, k) are the unsharded table (`tradebot.core.shards.merge_rows`)."""
    if metric not in RANK_METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose from {', '.join(RANK_METRICS)}")
    arrays = bars if isinstance(bars, Arrays) else Arrays.from_frame(bars)
    combos, invalid = expand_grid(base.params, grid)
    indexes = list(range(len(combos)))
    if shard is not None:
        shard_index, shard_count = shard
        if not 0 <= shard_index < shard_count:
            raise ValueError(f"shard index {shard_index} is not in 0..{shard_count - 1}")
        indexes = indexes[shard_index::shard_count]
        combos = combos[shard_index::shard_count]
    n = len(arrays.close)
    index = arrays.index
    bars_per_year = float(infer_bars_per_year(index))
    years = (index[-1] - index[0]).total_seconds() / 86_400.0 / 365.25 if n > 1 else 0.0

    ma_cache: dict[tuple[bool, int], np.ndarray] = {}
    lock = threading.Lock()

    def ma(ema: bool, window: int) -> np.ndarray:
        key = (ema, window)
        with lock:
            found = ma_cache.get(key)
        if found is None:
            found = moving_average(arrays.close, ema, window)
            with lock:
                ma_cache[key] = found
        return found

    def one(params: StrategyParams) -> dict[str, Any]:
        ema = params.ma_type == "ema"
        short_ma, long_ma = ma(ema, params.short_window), ma(ema, params.long_window)
        run = simulate(arrays, short_ma, long_ma, replace(base, params=params), record=False)
        row: dict[str, Any] = {name: _lookup(params, name) for name in grid}
        row.update(summary_stats(run.summary, n, base.initial_cash, bars_per_year, years))
        return row

    done = 0
    total = len(combos)
    rows: list[dict[str, Any]] = []
    chunk = max(1, min(64, total // (8 * (jobs or os.cpu_count() or 1)) or 1))

    def run_chunk(part: Sequence[StrategyParams]) -> list[dict[str, Any]]:
        return [one(params) for params in part]

    workers = max(1, jobs or os.cpu_count() or 1)
    if total:
        one(combos[0])  # compile (or load the cached compilation) once before the threads start
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part_rows in pool.map(run_chunk, _chunks(combos, chunk)):
            rows.extend(part_rows)
            done += len(part_rows)
            if progress is not None:
                progress(done, total)
    table = pd.DataFrame(rows)
    if shard is not None:
        table.insert(0, COMBINATION, indexes)  # the tie-break of a merge
    if len(table):
        table = table.sort_values(metric, ascending=False, na_position="last", kind="stable").reset_index(
            drop=True
        )
    return SweepResult(table=table, metric=metric, invalid=invalid, bars=n)


def _lookup(params: StrategyParams, name: str) -> Any:
    head, _, tail = name.partition(".")
    value: Any = getattr(params, head)
    if tail:
        value = getattr(value, tail)
    return str(value) if head == "sizing" else value


def _chunks(items: Sequence[StrategyParams], size: int) -> Iterable[Sequence[StrategyParams]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def walk_forward(
    bars: pd.DataFrame,
    base: BacktestConfig,
    grid: Mapping[str, Sequence[Any]],
    *,
    folds: int = 4,
    train_ratio: float = 3.0,
    metric: str = "sharpe",
    jobs: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Rolling walk-forward: optimise on a training window, report the winner on the window after it.

    The data is cut into `folds * 1 + train_ratio` equal test-sized blocks; fold k trains on the
    `train_ratio` blocks before its test block. A big gap between in-sample and out-of-sample scores
    is overfitting made visible. Each window is simulated on its own (its MAs warm up inside it),
    so nothing from the test window leaks into training and nothing from training into the test.
    """
    if folds < 1 or train_ratio <= 0:
        raise ValueError("walk-forward needs folds >= 1 and train_ratio > 0")
    n = len(bars)
    block = int(n / (folds + train_ratio))
    train_len = int(block * train_ratio)
    if block < 2 or train_len < 2:
        raise ValueError(f"{n} bars are too few for {folds} walk-forward folds")
    # A window no longer than the long average has no signal at all: its metrics would be empty (NaN).
    longest = max(grid.get("long_window", [base.params.long_window]))
    if block <= longest:
        most = int(n / (longest + 1) - train_ratio)
        advice = f"use at most {most} folds" if most >= 1 else "use more data or shorter long windows"
        raise ValueError(
            f"{folds} walk-forward folds of {n} bars make test windows of {block} bars, no longer than the"
            f" longest long window ({longest}): they could make no signal; {advice}"
        )
    rows: list[dict[str, Any]] = []
    for k in range(folds):
        test_start = train_len + k * block
        train = bars.iloc[test_start - train_len : test_start]
        test = bars.iloc[test_start : test_start + block]
        sweep = run_sweep(train, base, grid, metric=metric, jobs=jobs)
        if not len(sweep.table):
            raise ValueError("the grid has no valid parameter combination")
        best = sweep.best()
        data = base.params.model_dump()
        for name in grid:
            head, _, tail = name.partition(".")
            if tail:
                data[head][tail] = best[name]
            else:
                data[head] = best[name]
        raw = run_kernel(test, replace(base, params=StrategyParams.model_validate(data)))
        test_stats = compute_stats(
            raw.equity, raw.index, raw.trades, test["close"].to_numpy(), base.initial_cash
        )
        rows.append(
            {
                "fold": k + 1,
                "train_start": train.index[0],
                "train_end": train.index[-1],
                "test_start": test.index[0],
                "test_end": test.index[-1],
                **{name: best[name] for name in grid},
                f"in_sample_{metric}": best[metric],
                f"out_of_sample_{metric}": test_stats.get(metric),
                "out_of_sample_return_pct": test_stats.get("total_return_pct"),
                "out_of_sample_trades": test_stats.get("n_trades"),
            }
        )
        if progress is not None:
            progress(k + 1, folds)
    return pd.DataFrame(rows)
