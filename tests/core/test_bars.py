"""Bars from ticks: the vectorised aggregator is pandas' resample, and the incremental builder the live strategy
will feed tick by tick makes the very same bars."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradebot.core.bars import (
    TIMEFRAMES,
    BarArrays,
    BarBuilder,
    aggregate,
    bucket_start,
    describe_ns,
    timeframe_ns,
)

SECOND = 10**9
BAR_TIMEFRAMES = TIMEFRAMES[1:]


@st.composite
def tick_streams(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-ordered ticks with several on one stamp, long gaps (empty buckets), stamps before 1970, prices
    on a grid (equal highs and lows) and whole-lot sizes (sums exact in any order)."""
    n = draw(st.integers(1, 300))
    start = draw(st.integers(-3 * 86_400, 3 * 86_400)) * SECOND + draw(st.integers(0, SECOND - 1))
    steps = draw(
        st.lists(
            st.sampled_from(
                [0, 1, 7 * 10**8, SECOND, 13 * SECOND, 61 * SECOND, 3_700 * SECOND, 90_000 * SECOND]
            ),
            min_size=n,
            max_size=n,
        )
    )
    ts = start + np.cumsum(np.asarray(steps, dtype=np.int64))
    price = np.asarray(draw(st.lists(st.integers(1, 400), min_size=n, max_size=n)), dtype=np.float64) / 4
    size = np.asarray(draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)), dtype=np.float64)
    return ts, price, size


def pandas_bars(ts: np.ndarray, price: np.ndarray, size: np.ndarray, timeframe: str) -> BarArrays:
    """What pandas makes: resample with the left label and the left edge closed; empty buckets dropped."""
    index = pd.DatetimeIndex(ts.view("datetime64[ns]"))
    frame = pd.DataFrame({"price": price, "size": size}, index=index)
    rule = pd.Timedelta(timeframe_ns(timeframe), unit="ns")
    resampled = frame.resample(rule, label="left", closed="left", origin="epoch")
    ohlc = resampled["price"].ohlc()
    ohlc["volume"] = resampled["size"].sum()
    ohlc = ohlc.dropna(subset=["open"])
    return BarArrays(
        ts=pd.DatetimeIndex(ohlc.index).as_unit("ns").to_numpy().view(np.int64),
        open=ohlc["open"].to_numpy(),
        high=ohlc["high"].to_numpy(),
        low=ohlc["low"].to_numpy(),
        close=ohlc["close"].to_numpy(),
        volume=ohlc["volume"].to_numpy(),
    )


def of_ticks(ts: np.ndarray, price: np.ndarray, size: np.ndarray, timeframe: str) -> BarArrays:
    return aggregate(ts, price, price, price, price, size, timeframe_ns(timeframe))


def built_live(ts: np.ndarray, price: np.ndarray, size: np.ndarray, timeframe: str) -> BarArrays:
    builder = BarBuilder.of(timeframe)
    closed = [builder.on_tick(int(t), float(p), float(s)) for t, p, s in zip(ts, price, size, strict=True)]
    bars = [bar for bar in [*closed, builder.flush()] if bar is not None]
    assert builder.late == 0
    return BarArrays(
        ts=np.asarray([b.start_ns for b in bars], dtype=np.int64),
        open=np.asarray([b.open for b in bars]),
        high=np.asarray([b.high for b in bars]),
        low=np.asarray([b.low for b in bars]),
        close=np.asarray([b.close for b in bars]),
        volume=np.asarray([b.volume for b in bars]),
    )


def assert_same(ours: BarArrays, theirs: BarArrays) -> None:
    for column in fields(BarArrays):
        np.testing.assert_array_equal(
            getattr(ours, column.name), getattr(theirs, column.name), err_msg=column.name
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks=tick_streams(), timeframe=st.sampled_from(BAR_TIMEFRAMES))
def test_aggregate_is_pandas_resample_and_the_live_builder_makes_the_same_bars_tick_by_tick(
    ticks: tuple[np.ndarray, np.ndarray, np.ndarray], timeframe: str
) -> None:
    """pandas with the left label and the left edge closed; the builder fed one tick at a time."""
    vectorised = of_ticks(*ticks, timeframe)
    assert_same(vectorised, pandas_bars(*ticks, timeframe))
    assert_same(built_live(*ticks, timeframe), vectorised)


@settings(max_examples=100, deadline=None)
@given(
    ticks=tick_streams(),
    fine=st.sampled_from(["1s", "5s", "1m"]),
    coarse=st.sampled_from(["1m", "15m", "1h"]),
)
def test_finer_bars_aggregate_into_the_bars_the_ticks_make(
    ticks: tuple[np.ndarray, np.ndarray, np.ndarray], fine: str, coarse: str
) -> None:
    """Ticks to 1s to 1h gives the ticks-to-1h bars (each coarse length is a whole number of the fine one)."""
    small = of_ticks(*ticks, fine)
    via_small = aggregate(
        small.ts, small.open, small.high, small.low, small.close, small.volume, timeframe_ns(coarse)
    )
    assert_same(via_small, of_ticks(*ticks, coarse))
    builder = BarBuilder.of(coarse)
    live = [builder.on_bar(int(b[0]), *map(float, b[1:])) for b in zip(*vars(small).values(), strict=True)]
    live_ts = [bar.start_ns for bar in [*live, builder.flush()] if bar is not None]
    np.testing.assert_array_equal(live_ts, via_small.ts)


def test_float_sizes_sum_to_the_same_volume_to_the_last_bits() -> None:
    rng = np.random.default_rng(5)
    ts = np.sort(rng.integers(0, 3_600 * SECOND, 5_000))
    price = rng.uniform(90, 110, 5_000)
    size = rng.uniform(0, 3, 5_000)
    np.testing.assert_allclose(
        built_live(ts, price, size, "5m").volume, of_ticks(ts, price, size, "5m").volume, rtol=1e-12
    )


def test_buckets_are_aligned_to_the_utc_epoch_and_labelled_by_their_open() -> None:
    hour = timeframe_ns("1h")
    at = pd.Timestamp("2024-03-05T10:59:59.999999999Z").value
    assert bucket_start(at, hour) == pd.Timestamp("2024-03-05T10:00Z").value
    assert bucket_start(at + 1, hour) == pd.Timestamp("2024-03-05T11:00Z").value  # the open is in its bar
    assert bucket_start(-1, hour) == -hour  # before 1970 it floors too
    np.testing.assert_array_equal(bucket_start(np.asarray([at, at + 1]), hour), [at + 1 - hour, at + 1])
    day = timeframe_ns("1d")
    assert (
        bucket_start(pd.Timestamp("2024-03-05T23:30Z").value, day) == pd.Timestamp("2024-03-05T00:00Z").value
    )


def test_an_empty_bucket_makes_no_bar_and_a_bar_closes_when_a_later_bucket_starts() -> None:
    builder = BarBuilder.of("1m")
    assert builder.on_tick(0, 10.0, 1.0) is None
    assert builder.on_tick(59 * SECOND, 12.0, 1.0) is None
    closed = builder.on_tick(185 * SECOND, 11.0, 2.0)  # minutes 1 and 2 had no trade
    assert closed is not None
    assert (closed.start_ns, closed.open, closed.high, closed.low, closed.close, closed.volume) == (
        0,
        10.0,
        12.0,
        10.0,
        12.0,
        2.0,
    )
    last = builder.flush()
    assert last is not None
    assert (last.start_ns, last.close, last.volume) == (180 * SECOND, 11.0, 2.0)
    assert builder.flush() is None


def test_a_late_tick_is_counted_never_merged() -> None:
    builder = BarBuilder.of("1m")
    builder.on_tick(60 * SECOND, 10.0, 1.0)
    assert builder.on_tick(59 * SECOND, 99.0, 5.0) is None
    assert builder.late == 1
    bar = builder.flush()
    assert bar is not None
    assert (bar.high, bar.volume) == (10.0, 1.0)


def test_aggregate_refuses_rows_out_of_order() -> None:
    ts = np.asarray([120 * SECOND, 0], dtype=np.int64)
    ones = np.ones(2)
    with pytest.raises(ValueError, match="time order"):
        aggregate(ts, ones, ones, ones, ones, ones, timeframe_ns("1m"))


def test_timeframe_lengths_and_names() -> None:
    assert [timeframe_ns(tf) // SECOND for tf in BAR_TIMEFRAMES] == [
        1, 5, 15, 30, 60, 180, 300, 900, 1_800, 3_600, 7_200, 14_400, 21_600, 43_200, 86_400
    ]  # fmt: skip
    assert [describe_ns(timeframe_ns(tf)) for tf in BAR_TIMEFRAMES] == list(BAR_TIMEFRAMES)
    assert describe_ns(90 * SECOND) == "90s"
    assert describe_ns(2 * 86_400 * SECOND) == "2d"
    assert describe_ns(10**6) == "1ms"
    with pytest.raises(ValueError, match="'tick' is not a bar timeframe"):
        timeframe_ns("tick")
