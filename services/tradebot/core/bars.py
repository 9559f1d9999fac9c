"""Bars of a timeframe from ticks (or from finer bars): one bucketing rule, two drivers.

A bar is labelled by its open time and covers ``[open, open + timeframe)``; buckets are aligned to the
UTC epoch (``ts - ts mod timeframe`` in integer nanoseconds, so no float rounding and no time zone), and
a bucket with no trade makes no bar. These are the conventions of exchange klines and of pandas
``resample(tf, label="left", closed="left")`` with first / max / min / last / sum.

`aggregate` does it over whole arrays (the backtest); `BarBuilder` one tick at a time (the live strategy,
which gets a closed bar when the first tick of a later bucket arrives). Both bucket with `bucket_start`,
and tests/core/test_bars.py proves they make the same bars, and the same as pandas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, TypeVar, get_args

import numpy as np
import numpy.typing as npt

Timeframe = Literal[
    "tick", "1s", "5s", "15s", "30s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"
]
TIMEFRAMES: tuple[str, ...] = get_args(Timeframe)
TICK: Final = "tick"

_UNIT_NS: dict[str, int] = {"s": 10**9, "m": 60 * 10**9, "h": 3_600 * 10**9, "d": 86_400 * 10**9}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Stamps = TypeVar("Stamps", int, IntArray)


def timeframe_ns(timeframe: str) -> int:
    """The length of a bar timeframe (`1s` ... `1d`) in nanoseconds; `tick` has none."""
    if timeframe == TICK or timeframe not in TIMEFRAMES:
        raise ValueError(
            f"timeframe {timeframe!r} is not a bar timeframe (one of {', '.join(TIMEFRAMES[1:])})"
        )
    return int(timeframe[:-1]) * _UNIT_NS[timeframe[-1]]


def describe_ns(length_ns: int) -> str:
    """A duration in the timeframes' spelling, in the largest unit that divides it (`1h`, `90s`, `2d`);
    sub-second lengths in ms, us or ns."""
    for unit in ("d", "h", "m", "s"):
        if length_ns % _UNIT_NS[unit] == 0:
            return f"{length_ns // _UNIT_NS[unit]}{unit}"
    for unit, size in (("ms", 10**6), ("us", 10**3)):
        if length_ns % size == 0:
            return f"{length_ns // size}{unit}"
    return f"{length_ns}ns"


def bucket_start(ts_ns: Stamps, length_ns: int) -> Stamps:
    """The open time of the bar holding `ts_ns` (epoch nanoseconds, one stamp or an array): floor to a
    multiple of `length_ns` since the epoch. numpy's `%` floors like Python's, also before 1970."""
    return ts_ns - ts_ns % length_ns


@dataclass(frozen=True, eq=False)
class BarArrays:
    """Bars as arrays: `ts` is each bar's open time (epoch ns, ascending). (The backtest's `Bars` is one.)"""

    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray


def aggregate(
    ts: IntArray,
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    volume: FloatArray,
    length_ns: int,
) -> BarArrays:
    """Bars of `length_ns` from finer rows in time order (non-decreasing `ts`): ticks are rows with
    open = high = low = close = price and volume = size; finer bars fall in the bucket of their open time.
    Volume is summed by numpy (pairwise), so it can differ from a running sum in the last bit."""
    n = len(ts)
    if n == 0:
        empty = np.empty(0)
        return BarArrays(np.empty(0, dtype=np.int64), empty, empty, empty, empty, empty)
    starts = bucket_start(ts, length_ns)
    if bool(np.any(np.diff(starts) < 0)):
        raise ValueError("aggregate needs rows in time order")
    first = np.flatnonzero(np.diff(starts)) + 1
    first = np.concatenate(([0], first))
    last = np.concatenate((first[1:] - 1, [n - 1]))
    return BarArrays(
        ts=starts[first],
        open=open_[first],
        high=np.maximum.reduceat(high, first),
        low=np.minimum.reduceat(low, first),
        close=close[last],
        volume=np.add.reduceat(volume, first),
    )


@dataclass
class Bar:
    start_ns: int  # open time, epoch ns
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass
class BarBuilder:
    """The bar being built from ticks fed one by one. `on_tick` answers the bar it closed (the first tick
    of a later bucket closes the current one) or None; `close_due` closes it on the clock (a live source
    whose next tick may be far off); `flush` closes it at the end of the data. A tick older than the
    current bar's bucket, or than the end of a bar already closed, is late: counted in `late`, never
    merged (a closed bar has been traded on and published)."""

    length_ns: int
    current: Bar | None = None
    late: int = 0
    # Ticks before this are late: the current bar's open, or the end of the last bar closed on the clock.
    floor_ns: int | None = None
    # Ticks before this are in the history the strategy warmed up on: skipped, neither built nor late.
    history_end_ns: int | None = None
    _end_ns: int = field(default=0, repr=False)

    @classmethod
    def of(cls, timeframe: str) -> BarBuilder:
        return cls(timeframe_ns(timeframe))

    def on_tick(self, ts_ns: int, price: float, size: float = 0.0) -> Bar | None:
        return self.on_bar(ts_ns, price, price, price, price, size)

    def on_bar(
        self, ts_ns: int, open_: float, high: float, low: float, close: float, volume: float
    ) -> Bar | None:
        """A finer bar (by its open time), or a tick as a bar of one price."""
        if self.history_end_ns is not None and ts_ns < self.history_end_ns:
            return None
        bar = self.current
        if bar is not None and bar.start_ns <= ts_ns < self._end_ns:
            if high > bar.high:
                bar.high = high
            if low < bar.low:
                bar.low = low
            bar.close = close
            bar.volume += volume
            return None
        if self.floor_ns is not None and ts_ns < self.floor_ns:
            self.late += 1
            return None
        start = bucket_start(ts_ns, self.length_ns)
        self.current = Bar(start, open_, high, low, close, volume)
        self._end_ns = start + self.length_ns
        self.floor_ns = start
        return bar

    def close_due(self, now_ns: int, lateness_ns: int) -> Bar | None:
        """Closes the current bar if its bucket ended at least `lateness_ns` before `now_ns` (the clock):
        a tick of that bucket arriving later is late."""
        bar = self.current
        if bar is None or now_ns < self._end_ns + lateness_ns:
            return None
        self.current = None
        self.floor_ns = self._end_ns
        return bar

    def due(self, now_ns: int) -> bool:
        """Whether `close_due(now_ns, 0)` would close the current bar."""
        return self.current is not None and now_ns >= self._end_ns

    def flush(self) -> Bar | None:
        bar, self.current = self.current, None
        return bar

    def snapshot(self) -> dict[str, Any]:
        return {
            "current": None if self.current is None else asdict(self.current),
            "late": self.late,
            "floor_ns": self.floor_ns,
            "history_end_ns": self.history_end_ns,
        }

    @classmethod
    def restore(cls, length_ns: int, state: dict[str, Any]) -> BarBuilder:
        current = None if state["current"] is None else Bar(**state["current"])
        builder = cls(length_ns, current, int(state["late"]), state["floor_ns"], state["history_end_ns"])
        if current is not None:
            builder._end_ns = current.start_ns + length_ns
        return builder
