"""Performance statistics of a backtest, vectorised with numpy.

Conventions (all documented here so reports are unambiguous):

* Per-bar returns are simple returns of the equity curve with ``initial_cash`` prepended as the value
  before the first bar, so a commission paid on bar 0 counts. Volatility, Sharpe and Sortino use these
  returns (sample std, ``ddof=1``; risk-free rate 0) annualised by ``sqrt(bars_per_year)``.
* Drawdowns are measured against the running peak of the curve seeded with ``initial_cash``.
  ``max_drawdown_pct`` is <= 0 (e.g. -23.4). The drawdown duration is the longest underwater spell,
  from the peak bar to the first bar back at that peak (or to the last bar if it never recovers).
* ``cagr_pct`` compounds over calendar time between the first and last bar (days / 365.25).
* ``exposure_pct``: a trade holds a position on bars ``entry_bar .. exit_bar - 1`` (at least its entry
  bar when it enters and exits on the same bar); the share of bars covered by any trade.
* Trade ``return_pct`` values are already percentages; ``avg_trade_pct`` etc. average them as given.
* Undefined values are ``None``: ratios with a zero denominator (Sharpe of flat equity, profit factor
  with no losing trade, Calmar with no drawdown), trade averages with no (winning/losing) trades, and
  anything needing two or more bars when there is one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["Stats", "compute_stats", "drawdown_series", "infer_bars_per_year"]

Stats = dict[str, float | int | str | None]

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.0  # calendar-day markets (crypto) and intraday annualisation
TRADING_DAYS_PER_YEAR = 252.0  # weekday-only daily data (stocks)


_STEP_SLICE = 1 << 18


def _step_range(ns: npt.NDArray[np.int64]) -> tuple[int, int]:
    """The least and greatest step between consecutive timestamps (at least two)."""
    low, high = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    buffer = np.empty(min(_STEP_SLICE, len(ns) - 1), dtype=np.int64)
    for start in range(0, len(ns) - 1, _STEP_SLICE):
        stop = min(start + _STEP_SLICE, len(ns) - 1)
        steps = np.subtract(ns[start + 1 : stop + 1], ns[start:stop], out=buffer[: stop - start])
        low, high = min(low, int(steps.min())), max(high, int(steps.max()))
    return low, high


def infer_bars_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per year from the median spacing of ``index``.

    Daily spacing gives 252 when no bar falls on a weekend (stocks) and 365 otherwise (crypto);
    ticks where most share their timestamp with the previous one use the mean spacing instead;
    coarser data gives 365 / spacing-in-days (weekly ~52); intraday data gives seconds-per-year
    (365 days) / spacing, the median making session gaps and weekends irrelevant.
    """
    if len(index) < 2:
        raise ValueError("need at least two timestamps to infer the bar spacing")
    stamps: npt.NDArray[np.datetime64] = index.to_numpy(dtype="datetime64[ns]")
    ns = stamps.view(np.int64)
    # Regular data (the usual case) has one step: its least and greatest, over slices of the steps in
    # one reused buffer, instead of the median's partition of a curve-sized array.
    low, high = _step_range(ns)
    spacing_ns = float(low) if low == high else float(np.median(np.diff(ns)))
    if spacing_ns <= 0 and high > 0 and low >= 0:
        # Ticks, most sharing a timestamp with the one before: the mean spacing instead.
        spacing_ns = float(ns[-1] - ns[0]) / (len(ns) - 1)
    if spacing_ns <= 0:
        raise ValueError("timestamps must be increasing to infer the bar spacing")
    days = spacing_ns / 1e9 / SECONDS_PER_DAY
    if 0.5 <= days < 1.5:
        weekend = np.asarray(index.dayofweek) >= 5
        return DAYS_PER_YEAR if bool(weekend.any()) else TRADING_DAYS_PER_YEAR
    return DAYS_PER_YEAR / days


def drawdown_series(equity: np.ndarray, initial: float | None = None) -> np.ndarray:
    """Drawdown at each bar as a fraction (<= 0) below the running peak (seeded with ``initial``)."""
    values = np.asarray(equity, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    # One buffer, updated in place: on long series fresh temporaries cost more than the arithmetic.
    out: npt.NDArray[np.float64] = np.maximum.accumulate(values)
    if initial is not None:
        np.maximum(out, float(initial), out=out)
    not_positive = None if out.min() > 0 else out <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(values, out, out=out)
    out -= 1.0
    if not_positive is not None:
        out[not_positive] = 0.0
    np.minimum(out, 0.0, out=out)
    return out


def _f(value: float | np.floating | None) -> float | None:
    """A plain finite float, or None."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _ratio(num: float, den: float) -> float | None:
    if den == 0.0 or not math.isfinite(num) or not math.isfinite(den):
        return None
    return _f(num / den)


class CurveStats(NamedTuple):
    """What `compute_stats` reads from the equity curve, in one pass (`_curve_stats`)."""

    returns_finite: bool
    mean_return: float
    std_return: float  # sample (ddof=1)
    downside: float  # root mean square of the negative returns (the others count as 0)
    max_drawdown: float  # <= 0, a fraction, as the minimum of `drawdown_series`
    peak_bar: int  # the longest underwater spell: its peak bar ...
    recovery_bar: int  # ... and the bar back at that peak (or the last bar); (0, 0) if never underwater


# error_model="numpy": a zero equity divides as numpy divides (inf or nan), as the definitions do.
@numba.njit(cache=True, nogil=True, error_model="numpy")
def _curve_pass(
    equity: np.ndarray, initial: float
) -> tuple[bool, float, float, float, float, int, int]:  # pragma: no cover - compiled
    # The same arithmetic per bar as the vectorised definitions (returns against the previous equity,
    # the first against `initial`; drawdown against the running peak seeded with `initial`), summed in
    # order: no curve-sized temporaries, which on 10M bars cost more in page faults than the sums.
    n = len(equity)
    total = 0.0
    finite = True
    previous = initial
    for i in range(n):
        r = equity[i] / previous - 1.0
        if not np.isfinite(r):
            finite = False
        total += r
        previous = equity[i]
    mean = total / n
    squares = 0.0
    down = 0.0
    previous = initial
    peak = initial
    max_dd = 0.0
    best_peak, best_recovery = 0, 0
    spell_start = -1
    for i in range(n):
        value = equity[i]
        r = value / previous - 1.0
        squares += (r - mean) * (r - mean)
        if r < 0.0:
            down += r * r
        previous = value
        if value > peak:
            peak = value
        dd = value / peak - 1.0 if peak > 0.0 else 0.0
        if dd < max_dd:
            max_dd = dd
        if dd < 0.0:
            if spell_start < 0:
                spell_start = i
        elif spell_start >= 0:
            start = spell_start - 1 if spell_start > 0 else 0
            if i - start > best_recovery - best_peak:
                best_peak, best_recovery = start, i
            spell_start = -1
    if spell_start >= 0:
        start = spell_start - 1 if spell_start > 0 else 0
        if n - 1 - start > best_recovery - best_peak:
            best_peak, best_recovery = start, n - 1
    std = math.sqrt(squares / (n - 1)) if n > 1 else math.nan
    return finite, mean, std, math.sqrt(down / n), max_dd, best_peak, best_recovery


def _curve_stats(equity: np.ndarray, initial: float) -> CurveStats:
    finite, mean, std, downside, max_dd, peak_bar, recovery_bar = _curve_pass(
        np.ascontiguousarray(equity, dtype=np.float64), initial
    )
    return CurveStats(bool(finite), mean, std, downside, max_dd, int(peak_bar), int(recovery_bar))


def _exposure(trades: pd.DataFrame, n: int) -> float:
    if n == 0 or len(trades) == 0:
        return 0.0
    entry = np.clip(trades["entry_bar"].to_numpy(dtype=np.int64), 0, n)
    exit_ = np.clip(trades["exit_bar"].to_numpy(dtype=np.int64), 0, n)
    exit_ = np.minimum(np.maximum(exit_, entry + 1), n)
    # Bars held = length of the union of [entry, exit) intervals: sorted by entry, each adds what lies
    # beyond the furthest exit before it (per trade, not per bar).
    order = np.argsort(entry, kind="stable")
    starts, ends = entry[order], exit_[order]
    reach = np.maximum.accumulate(ends)
    before = np.concatenate(([0], reach[:-1]))
    held = int(np.maximum(ends - np.maximum(starts, before), 0).sum())
    return float(held / n * 100.0)


def compute_stats(
    equity: np.ndarray,
    index: pd.DatetimeIndex,
    trades: pd.DataFrame,
    close: np.ndarray,
    initial_cash: float,
) -> Stats:
    """All headline statistics of one backtest run; see the module docstring for the conventions."""
    eq = np.asarray(equity, dtype=np.float64)
    px = np.asarray(close, dtype=np.float64)
    n = len(eq)
    if n == 0:
        raise ValueError("equity is empty")
    if len(index) != n or len(px) != n:
        raise ValueError(
            f"equity ({n}), index ({len(index)}) and close ({len(px)}) must have the same length"
        )
    if initial_cash <= 0:
        raise ValueError("initial_cash must be > 0")

    start, end = index[0], index[-1]
    duration_days = (end - start).total_seconds() / SECONDS_PER_DAY
    bars_per_year = infer_bars_per_year(index) if n >= 2 else None

    final = float(eq[-1])
    peak_value = max(float(initial_cash), float(eq.max()))
    total_return = final / initial_cash - 1.0
    cagr: float | None = None
    if duration_days > 0:
        years = duration_days / 365.25
        if final <= 0:
            cagr = -1.0
        else:
            try:
                cagr = (final / initial_cash) ** (1.0 / years) - 1.0
            except OverflowError:
                cagr = None

    curve = _curve_stats(eq, float(initial_cash))
    volatility = sharpe = sortino = None
    if bars_per_year is not None and n >= 2 and curve.returns_finite:
        scale = math.sqrt(bars_per_year)
        mean, std = curve.mean_return, curve.std_return
        volatility = _f(std * scale * 100.0)
        sharpe = _ratio(mean * scale, std) if std > 1e-15 * max(1.0, abs(mean)) else None
        sortino = _ratio(mean * scale, curve.downside) if curve.downside > 0 else None

    max_dd = curve.max_drawdown if curve.max_drawdown < 0 else 0.0
    peak_bar, recovery_bar = curve.peak_bar, curve.recovery_bar
    dd_days = (index[recovery_bar] - index[peak_bar]).total_seconds() / SECONDS_PER_DAY
    calmar = _ratio(cagr, abs(max_dd)) if cagr is not None and max_dd < 0 else None

    n_trades = len(trades)
    win_rate = profit_factor = avg_win = avg_loss = None
    avg_trade = best = worst = expectancy = None
    commissions = 0.0
    if n_trades:
        pnl = trades["pnl"].to_numpy(dtype=np.float64)
        ret = trades["return_pct"].to_numpy(dtype=np.float64)
        wins = pnl[pnl > 0]
        losses = pnl[pnl < 0]
        win_rate = len(wins) / n_trades * 100.0
        gross_loss = float(-losses.sum())
        profit_factor = _ratio(float(wins.sum()), gross_loss) if len(losses) else None
        avg_win = _f(wins.mean()) if len(wins) else None
        avg_loss = _f(losses.mean()) if len(losses) else None
        finite_ret = ret[np.isfinite(ret)]
        if len(finite_ret):
            avg_trade = _f(finite_ret.mean())
            best = _f(finite_ret.max())
            worst = _f(finite_ret.min())
        expectancy = _f(pnl.mean())
        commissions = float(trades["commission"].to_numpy(dtype=np.float64).sum())

    with np.errstate(divide="ignore", invalid="ignore"):
        buy_hold = _f((px[-1] / px[0] - 1.0) * 100.0) if px[0] > 0 else None

    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "duration_days": float(duration_days),
        "bars": int(n),
        "bars_per_year": bars_per_year,
        "equity_final": final,
        "equity_peak": peak_value,
        "total_return_pct": total_return * 100.0,
        "cagr_pct": None if cagr is None else _f(cagr * 100.0),
        "volatility_ann_pct": volatility,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "max_drawdown_pct": max_dd * 100.0,
        "max_drawdown_duration_bars": int(recovery_bar - peak_bar),
        "max_drawdown_duration_days": float(dd_days),
        "n_trades": int(n_trades),
        "win_rate_pct": win_rate,
        "profit_factor": profit_factor,
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "avg_trade_pct": avg_trade,
        "best_trade_pct": best,
        "worst_trade_pct": worst,
        "expectancy": expectancy,
        "exposure_pct": _exposure(trades, n),
        "buy_hold_return_pct": buy_hold,
        "commissions": commissions,
    }
