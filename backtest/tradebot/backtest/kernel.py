"""The fast kernel: the strategy's rules compiled with numba, over arrays.

It does not copy the strategy's rules: numba compiles the very rule functions `CrossoverStrategy`
calls (`RULE_FUNCTIONS`: the cross in `signals`, stops and limits in `risk`, `sizing`, the fill
arithmetic of `book`), and the loop here calls them in the order `CrossoverStrategy` and
`run_reference` do, so its trades are identical; `tests/backtest/test_kernel_parity.py` proves it
with property tests. What is written here alone is the driving loop (one symbol, fills by the fill
model), the moving averages over whole arrays, the trade table and the running statistics: a change
to `run_reference` or `CrossoverStrategy.on_price`'s order of steps must change the loop in step.
The loop jumps over quiet stretches (flat, nothing pending, the equity unchanged) to the next cross
that could enter: those bars would change nothing, and half the bars of a sweep are such bars.

Its arguments and answer are typed records (NamedTuples; numba reads their fields by name, so no
argument order can be confused): `KernelBars`, `KernelSetup` (which holds the strategy's `Rules`),
and `KernelRun` (a `Summary`, the equity curve, the trade table).

numba caches the compiled kernel on disk, keyed by the content of this file; it does not notice a
change in another file compiled into it. So the source of the rule modules is hashed into the
cache key as well (`_cached`): edit `risk.py` and the kernel is compiled afresh, never stale.
Give `SIMULATE` only these records: the cache's index names the types it was compiled for, and
every process that loads the index must be able to import them.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple, cast

import numba
import numpy as np
import pandas as pd
from numba.extending import register_jitable

from tradebot.backtest.engine import BacktestConfig, RawResult
from tradebot.backtest.trades import trades_frame
from tradebot.core import book, costs, risk, rules, signals, sizing
from tradebot.core.book import after_fill, cash_after_exit, execute
from tradebot.core.risk import EntryBlock, cooldown_until, entry_block, stop_exit, tracks_daily_loss, trail
from tradebot.core.rules import NO_EXIT, ExitCode, Rules
from tradebot.core.signals import NO_CROSS, UP, cross
from tradebot.core.sizing import entry_size

RULE_MODULES: tuple[ModuleType, ...] = (costs, rules, signals, risk, sizing, book)
RULE_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    costs.fill_price,
    costs.commission,
    costs.floor_to_step,
    cross,
    stop_exit,
    trail,
    cooldown_until,
    tracks_daily_loss,
    entry_block,
    entry_size,
    execute,
    after_fill,
    cash_after_exit,
)
for _rule in RULE_FUNCTIONS:
    # Compiled wherever jitted code calls it; Python callers keep the plain function.
    register_jitable(_rule)


class KernelBars(NamedTuple):
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    day: np.ndarray  # UTC day number of each bar (the daily-loss limit's day)


class KernelSetup(NamedTuple):
    rules: Rules
    next_open: bool  # fill model: decisions at the close fill at the next open (else at the close)
    bar_range: bool  # stops see each bar's open, high and low before its close (else the close only)
    initial_cash: float

    @classmethod
    def of(cls, config: BacktestConfig) -> KernelSetup:
        return cls(
            rules=Rules.of(config.params, config.costs),
            next_open=config.fill == "next-open",
            bar_range=config.stops_see_bar_range,
            initial_cash=config.initial_cash,
        )


class Summary(NamedTuple):
    """What a sweep ranks by, accumulated inside the kernel (see `sweep.summary_stats`). Returns are
    against the previous bar's equity, the first against the initial cash, as `metrics.compute_stats`."""

    final_equity: float
    max_drawdown: float  # <= 0, a fraction
    return_sum: float
    return_sq_sum: float
    downside_sq_sum: float
    n_trades: float
    wins: float
    gross_win: float
    gross_loss: float
    exposure_bars: float


class KernelRun(NamedTuple):
    summary: Summary
    equity: np.ndarray  # per bar; empty unless recorded
    trades: np.ndarray  # one row per trade, columns `_T_*`; empty unless recorded


@numba.njit(cache=True, nogil=True)
def moving_average(close: np.ndarray, ema: bool, window: int) -> np.ndarray:  # pragma: no cover - compiled
    """`MovingAverage.update` over a whole series (NaN until `window` prices)."""
    n = close.shape[0]
    out = np.empty(n)
    total = 0.0
    value = math.nan
    alpha = 2.0 / (window + 1.0)
    for i in range(n):
        count = i + 1
        price = close[i]
        if not ema:
            total += price
            if count > window:
                total -= close[i - window]
            out[i] = total / window if count >= window else math.nan
        elif count < window:
            total += price
            out[i] = math.nan
        elif count == window:
            total += price
            value = total / window
            out[i] = value
        else:
            value = value + alpha * (price - value)
            out[i] = value
    return out


# The account and the open trade live in one small float array, so the rarely taken fill path can be
# a separate (not inlined) function: that keeps the per-bar loop small enough for LLVM to keep its
# state in registers, which doubled its speed.
_CASH, _QTY, _ENTRY, _BEST, _OBAR, _OSIDE, _OQTY, _OPRICE, _OFEE, _NTR, _WINS, _GWIN, _GLOSS = range(13)
# The columns of the trade table: trades.TRADE_COLUMNS less the times and the return.
_T_ENTRY_BAR, _T_EXIT_BAR, _T_SIDE, _T_QTY, _T_ENTRY_PRICE, _T_EXIT_PRICE, _T_PNL, _T_REASON, _T_FEE = range(
    9
)


@numba.njit(nogil=True)
def _apply_fill(  # pragma: no cover - compiled
    state: np.ndarray,
    trades: np.ndarray,
    bar: int,
    side: int,
    fill_qty: float,
    price: float,
    reason: int,
    rules: Rules,
    record: bool,
) -> None:
    """`CrossoverStrategy.on_fill` plus `TradeLog.record` (into `trades`, sized by `_entry_crosses`)."""
    executed, fee = execute(rules, side, fill_qty, price)
    signed = side * fill_qty
    state[_CASH] -= signed * executed + fee
    state[_QTY], state[_ENTRY], state[_BEST] = after_fill(
        state[_QTY], state[_ENTRY], state[_BEST], signed, executed
    )
    if state[_OSIDE] == 0.0:
        state[_OBAR] = bar
        state[_OSIDE] = side
        state[_OQTY] = fill_qty
        state[_OPRICE] = executed
        state[_OFEE] = fee
        return
    open_side = int(state[_OSIDE])
    pnl = open_side * (executed - state[_OPRICE]) * state[_OQTY] - state[_OFEE] - fee
    if pnl > 0.0:
        state[_WINS] += 1.0
        state[_GWIN] += pnl
    else:
        state[_GLOSS] -= pnl
    if record:
        k = int(state[_NTR])
        if k >= trades.shape[0]:  # never: `_entry_crosses` bounds the trades; this guards the memory
            raise IndexError("trade table overflow")
        trades[k, _T_ENTRY_BAR] = state[_OBAR]
        trades[k, _T_EXIT_BAR] = bar
        trades[k, _T_SIDE] = open_side
        trades[k, _T_QTY] = state[_OQTY]
        trades[k, _T_ENTRY_PRICE] = state[_OPRICE]
        trades[k, _T_EXIT_PRICE] = executed
        trades[k, _T_PNL] = pnl
        trades[k, _T_REASON] = reason
        trades[k, _T_FEE] = state[_OFEE] + fee
    state[_NTR] += 1.0
    state[_OSIDE] = 0.0


@numba.njit(nogil=True)
def _entry_crosses(short_ma: np.ndarray, long_ma: np.ndarray, allow_short: bool) -> int:  # pragma: no cover
    """How many bars' crosses could enter: the most trades a run can make, as each starts at one."""
    count = 0
    j = _next_entry_cross(short_ma, long_ma, 0, math.nan, math.nan, allow_short)
    n = short_ma.shape[0]
    while j < n:
        count += 1
        j = _next_entry_cross(short_ma, long_ma, j + 1, short_ma[j], long_ma[j], allow_short)
    return count


@numba.njit(nogil=True)
def _next_entry_cross(  # pragma: no cover - compiled
    short_ma: np.ndarray, long_ma: np.ndarray, start: int, prev_s: float, prev_l: float, allow_short: bool
) -> int:
    """The first bar from `start` whose cross could enter (up, or down when shorting), else the end;
    `prev_s` and `prev_l` are the averages at the bar before `start`."""
    n: int = short_ma.shape[0]
    j = start
    while j < n:
        s = short_ma[j]
        lma = long_ma[j]
        direction = cross(prev_s, prev_l, s, lma)
        if direction == UP or (direction != NO_CROSS and allow_short):
            return j
        prev_s = s
        prev_l = lma
        j += 1
    return n


@numba.njit(nogil=True)
def _simulate(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    bars: KernelBars, short_ma: np.ndarray, long_ma: np.ndarray, setup: KernelSetup, record: bool
):
    """`run_reference` over arrays; see `KernelRun`. Not cached itself: compiled into `SIMULATE`."""
    rules = setup.rules
    opens = bars.open
    highs = bars.high
    lows = bars.low
    closes = bars.close
    days = bars.day
    next_open = setup.next_open
    bar_range = setup.bar_range
    initial_cash = setup.initial_cash
    n = closes.shape[0]
    state = np.zeros(13)
    state[_CASH] = initial_cash
    state[_OBAR] = -1.0
    # Sized once, never grown: a trade table reassigned in the loop costs reference counting on every bar.
    trades = np.empty((_entry_crosses(short_ma, long_ma, rules.allow_short) if record else 0, 9))
    equity_curve = np.empty(n if record else 0)
    last_price = math.nan
    prev_s = math.nan
    prev_l = math.nan
    bar_index = -1
    cooldown_end = -1
    use_day = tracks_daily_loss(rules)
    day = -(2**62)
    day_start_equity = math.nan
    # Orders decided at a close, filled at the next open (next-open fills): an exit and an entry at most.
    p_count = 0
    p_side = np.zeros(2, np.int64)
    p_qty = np.zeros(2)
    p_reason = np.zeros(2, np.int64)
    # Orders decided now: a stop or cross exit and an entry at most.
    f_side = np.zeros(2, np.int64)
    f_qty = np.zeros(2)
    f_price = np.zeros(2)
    f_reason = np.zeros(2, np.int64)
    # Running statistics, as metrics.compute_stats defines them (returns against the previous equity,
    # the first against the initial cash; the peak seeded with the initial cash). The values before
    # the last bar are kept so that the end-of-data close can redo that bar.
    prev_equity = initial_cash
    peak = initial_cash
    max_dd = 0.0
    ret_sum = 0.0
    ret_sq = 0.0
    down_sq = 0.0
    exposure = 0
    last_prev_equity = initial_cash
    last_peak = initial_cash
    last_max_dd = 0.0
    last_r = 0.0

    i = 0
    while i < n:
        cash = state[_CASH]
        if p_count == 0 and state[_QTY] == 0.0 and prev_equity == cash and 0.0 < cash < math.inf:
            # Quiet: flat, nothing pending, and the last bar's equity is this cash, so until a cross that
            # could enter, every bar repeats that equity (a return of exactly 0, the same drawdown)
            # and changes nothing: jump to that cross and set what those bars would have left behind.
            j = _next_entry_cross(short_ma, long_ma, i, prev_s, prev_l, rules.allow_short)
            if j > i:
                if record:
                    equity_curve[i:j] = cash
                bar_index += j - i
                last_price = closes[j - 1]
                prev_s = short_ma[j - 1]
                prev_l = long_ma[j - 1]
                if use_day and days[j - 1] != day:
                    day = days[j - 1]
                    day_start_equity = cash + 0.0  # flat: the day's first equity is the cash
                i = j
                if i == n:
                    break
        # The open: fill what the previous close decided (on_fill; next-open fills only).
        for k in range(p_count):
            _apply_fill(state, trades, i, p_side[k], p_qty[k], opens[i], p_reason[k], rules, record)
        p_count = 0
        if bar_range:
            # on_intrabar: roll the day, stops against the bar's range, move the best price, fill.
            if use_day and days[i] != day:
                day = days[i]
                q = state[_QTY]
                day_start_equity = state[_CASH] + (q * last_price if q != 0.0 else 0.0)
            q = state[_QTY]
            if q != 0.0:
                code, exit_at = stop_exit(rules, q, state[_ENTRY], state[_BEST], opens[i], highs[i], lows[i])
                # Seen before the bar's close event moves the bar index on.
                cooldown_end = cooldown_until(rules, code, bar_index + 1, cooldown_end)
                state[_BEST] = trail(q, state[_BEST], highs[i], lows[i])
                if code != NO_EXIT:
                    _apply_fill(state, trades, i, -1 if q > 0.0 else 1, abs(q), exit_at, code, rules, record)

        # The close (or tick): on_price.
        price = closes[i]
        if use_day and days[i] != day:
            day = days[i]
            q = state[_QTY]
            day_start_equity = state[_CASH] + (q * last_price if q != 0.0 else 0.0)
        bar_index += 1
        last_price = price
        cash = state[_CASH]
        qty = state[_QTY]
        position = qty
        cash_after = cash
        fills = 0
        if not bar_range and qty != 0.0:
            code, exit_at = stop_exit(rules, qty, state[_ENTRY], state[_BEST], price, price, price)
            if code != NO_EXIT:
                cooldown_end = cooldown_until(rules, code, bar_index, cooldown_end)
                cash_after = cash_after_exit(rules, cash, position, exit_at)
                f_side[0] = -1 if qty > 0.0 else 1
                f_qty[0] = abs(qty)
                f_price[0] = exit_at
                f_reason[0] = code
                fills = 1
                position = 0.0
        state[_BEST] = trail(qty, state[_BEST], price, price)
        s = short_ma[i]
        lma = long_ma[i]
        direction = cross(prev_s, prev_l, s, lma)
        prev_s = s
        prev_l = lma
        if direction != NO_CROSS:
            if position * direction < 0.0:
                cash_after = cash_after_exit(rules, cash, position, price)
                f_side[fills] = direction
                f_qty[fills] = abs(position)
                f_price[fills] = price
                f_reason[fills] = ExitCode.EXIT_CROSS.value
                fills += 1
                position = 0.0
            # One symbol: the equity an entry starts from is the cash after any exit.
            if (
                position == 0.0
                and (direction == UP or rules.allow_short)
                and entry_block(rules, bar_index, cooldown_end, cash_after, day_start_equity)
                == EntryBlock.NONE
            ):
                size = entry_size(rules, direction, price, cash_after, cash_after, 0.0)
                if size > 0.0:
                    f_side[fills] = direction
                    f_qty[fills] = size
                    f_price[fills] = price
                    f_reason[fills] = ExitCode.EXIT_CROSS.value  # unused: an entry has no exit reason
                    fills += 1
        if next_open:
            for k in range(fills):
                p_side[k] = f_side[k]
                p_qty[k] = f_qty[k]
                p_reason[k] = f_reason[k]
            p_count = fills
        else:
            for k in range(fills):
                _apply_fill(state, trades, i, f_side[k], f_qty[k], f_price[k], f_reason[k], rules, record)
        qty = state[_QTY]
        equity = state[_CASH] + (qty * price if qty != 0.0 else 0.0)
        if record:
            equity_curve[i] = equity
        if qty != 0.0:
            exposure += 1
        r = equity / prev_equity - 1.0 if prev_equity != 0.0 else 0.0
        if i == n - 1:
            # Kept for the end-of-data close only; saved on every bar they cost a third of the loop's
            # time (registers spilled to the stack).
            last_prev_equity = prev_equity
            last_peak = peak
            last_max_dd = max_dd
            last_r = r
        ret_sum += r
        ret_sq += r * r
        if r < 0.0:
            down_sq += r * r
        prev_equity = equity
        if equity > peak:
            peak = equity
        dd = equity / peak - 1.0
        if dd < max_dd:
            max_dd = dd
        i += 1

    if n > 0 and state[_QTY] != 0.0:
        # End of data: close what is still open at the last close, and redo the last bar's statistics.
        q = state[_QTY]
        _apply_fill(
            state,
            trades,
            n - 1,
            -1 if q > 0.0 else 1,
            abs(q),
            closes[n - 1],
            ExitCode.END_OF_DATA.value,
            rules,
            record,
        )
        cash = state[_CASH]
        if record:
            equity_curve[n - 1] = cash
        ret_sum -= last_r
        ret_sq -= last_r * last_r
        if last_r < 0.0:
            down_sq -= last_r * last_r
        r = cash / last_prev_equity - 1.0 if last_prev_equity != 0.0 else 0.0
        ret_sum += r
        ret_sq += r * r
        if r < 0.0:
            down_sq += r * r
        peak = last_peak if cash < last_peak else cash
        dd = cash / peak - 1.0
        max_dd = last_max_dd if last_max_dd < dd else dd

    summary = Summary(
        final_equity=state[_CASH],
        max_drawdown=max_dd,
        return_sum=ret_sum,
        return_sq_sum=ret_sq,
        downside_sq_sum=down_sq,
        n_trades=state[_NTR],
        wins=state[_WINS],
        gross_win=state[_GWIN],
        gross_loss=state[_GLOSS],
        exposure_bars=float(exposure),
    )
    return KernelRun(summary, equity_curve, trades[: int(state[_NTR]) if record else 0])


def _source_hash(modules: tuple[ModuleType, ...]) -> str:
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


def _cached(rules_source_hash: str) -> Callable[..., KernelRun]:
    """`_simulate`, cached on disk under a key that includes `rules_source_hash` (numba keys a cached
    function by its file's content, its bytecode and the values it closes over)."""

    @numba.njit(cache=True, nogil=True)
    def simulate(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
        bars: KernelBars, short_ma: np.ndarray, long_ma: np.ndarray, setup: KernelSetup, record: bool
    ):
        rules_source_hash  # noqa: B018 - closed over only to be in the cache key
        return _simulate(bars, short_ma, long_ma, setup, record)

    return cast(Callable[..., KernelRun], simulate)


# The compiled kernel: SIMULATE(KernelBars, short MA, long MA, KernelSetup, record) -> KernelRun.
SIMULATE = _cached(_source_hash(RULE_MODULES))


@dataclass(frozen=True)
class Arrays:
    """A bar frame as contiguous float64 arrays plus the UTC day number of each bar."""

    index: pd.DatetimeIndex
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    nanos: np.ndarray  # epoch nanoseconds (UTC) of each bar

    @classmethod
    def from_frame(cls, bars: pd.DataFrame) -> Arrays:
        index = pd.DatetimeIndex(bars.index)
        # `as_unit` copies (and converts) even an index already in nanoseconds: 0.17 s for 10M bars.
        nanos = (index if index.unit == "ns" else index.as_unit("ns")).asi8  # type: ignore[attr-defined]
        return cls.of(
            index,
            nanos,
            *(bars[name].to_numpy(dtype=np.float64) for name in ("open", "high", "low", "close")),
        )

    @classmethod
    def of(
        cls,
        index: pd.DatetimeIndex,
        nanos: np.ndarray,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
    ) -> Arrays:
        """Columns as they are (copied only if not contiguous float64), without a frame around them."""

        def column(values: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(values, dtype=np.float64)

        return cls(index, column(open_), column(high), column(low), column(close), nanos)

    @functools.cached_property
    def day(self) -> np.ndarray:
        """UTC day number of each bar: made the first time a run tracks the daily-loss limit."""
        days: np.ndarray = np.floor_divide(self.nanos, 86_400 * 10**9)
        return days

    def kernel_bars(self, rules: Rules) -> KernelBars:
        # A run without the daily-loss limit never reads the day numbers: one stands in for them.
        day = self.day if tracks_daily_loss(rules) else _NO_DAYS
        return KernelBars(open=self.open, high=self.high, low=self.low, close=self.close, day=day)


_NO_DAYS = np.zeros(1, dtype=np.int64)


# From this many bars the two averages are computed at once, the long one on a thread of its own
# (`moving_average` releases the GIL): 0.05 s of a 10M-bar run, against a thread's start-up below it.
PARALLEL_AVERAGES_FROM = 1 << 20


def moving_averages(arrays: Arrays, config: BacktestConfig) -> tuple[np.ndarray, np.ndarray]:
    ema = config.params.ma_type == "ema"
    close, short, long = arrays.close, config.params.short_window, config.params.long_window
    if len(close) < PARALLEL_AVERAGES_FROM:
        return moving_average(close, ema, short), moving_average(close, ema, long)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="long-average") as pool:
        long_ma = pool.submit(moving_average, close, ema, long)
        short_ma = moving_average(close, ema, short)
        return short_ma, long_ma.result()


def simulate(
    arrays: Arrays, short_ma: np.ndarray, long_ma: np.ndarray, config: BacktestConfig, *, record: bool
) -> KernelRun:
    """One run of the kernel (what `run_kernel` and every sweep combination do); `record` keeps the
    equity curve and the trade table, not only the summary."""
    setup = KernelSetup.of(config)
    return SIMULATE(arrays.kernel_bars(setup.rules), short_ma, long_ma, setup, record)


def run_kernel(bars: pd.DataFrame | Arrays, config: BacktestConfig) -> RawResult:
    """The fast path: same trades as `run_reference`, orders of magnitude quicker."""
    arrays = bars if isinstance(bars, Arrays) else Arrays.from_frame(bars)
    short_ma, long_ma = moving_averages(arrays, config)
    run = simulate(arrays, short_ma, long_ma, config, record=True)
    table = run.trades
    trades = trades_frame(
        arrays.index,
        table[:, _T_ENTRY_BAR].astype(np.int64),
        table[:, _T_EXIT_BAR].astype(np.int64),
        table[:, _T_SIDE].astype(np.int64),
        table[:, _T_QTY],
        table[:, _T_ENTRY_PRICE],
        table[:, _T_EXIT_PRICE],
        table[:, _T_PNL],
        table[:, _T_REASON].astype(np.int64),
        table[:, _T_FEE],
    )
    return RawResult(index=arrays.index, equity=run.equity, short_ma=short_ma, long_ma=long_ma, trades=trades)
