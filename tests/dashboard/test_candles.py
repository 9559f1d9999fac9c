"""The candlestick chart's data: moving averages as the strategy computes them, fills on their bars, and a
caption that says how many bars are shown of how many."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from tradebot.core.models import ClosedBar, Fill, FillStatus, OrderReason, Side
from tradebot.core.params import StrategyParams
from tradebot.core.signals import Crossover
from tradebot.dashboard.candles import candle_chart, candle_view, time_format

T0 = datetime(2024, 1, 2, 9, 0, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def _bars(count: int) -> list[ClosedBar]:
    closes = [100.0 + 3.0 * math.sin(i / 4.0) + i * 0.1 for i in range(count)]
    return [
        ClosedBar(
            symbol="AAA", ts=T0 + i * FIVE_MIN, open=close - 0.5, high=close + 1.0, low=close - 1.0,
            close=close, volume=10.0 + i, timeframe="5m", source="s1",
        )
        for i, close in enumerate(closes)
    ]  # fmt: skip


def _fill(at: datetime, reason: OrderReason, status: FillStatus = FillStatus.FILLED) -> Fill:
    rejected = status is FillStatus.REJECTED
    return Fill(
        order_id=f"o-{at.isoformat()}", strategy_id="s1", symbol="AAA",
        side=Side.SELL if reason is OrderReason.STOP_LOSS else Side.BUY, qty=0.0 if rejected else 2.0,
        price=0.0 if rejected else 101.5, ts=at, status=status, reason=reason,
        reject_reason="halted" if rejected else None,
    )  # fmt: skip


@pytest.mark.parametrize("ma_type", ["sma", "ema"])
def test_moving_averages_are_the_strategys_over_the_bars_closes(ma_type: str) -> None:
    params = StrategyParams.model_validate(
        {"ma_type": ma_type, "short_window": 3, "long_window": 8, "timeframe": "5m"}
    )
    bars = _bars(40)
    view = candle_view(list(reversed(bars)), [], params, None)  # newest first, as the API answers
    crossover = Crossover.of(params)  # what the strategy updates with each bar's close
    expected = [crossover.update(bar.close)[:2] for bar in bars]
    assert list(view.candles["close"]) == [bar.close for bar in bars]  # oldest first
    got = list(zip(view.candles["short_ma"], view.candles["long_ma"], strict=True))
    for (short, long_), (want_short, want_long) in zip(got, expected, strict=True):
        assert short == want_short or (math.isnan(short) and math.isnan(want_short))
        assert long_ == want_long or (math.isnan(long_) and math.isnan(want_long))
    assert math.isnan(got[6][1])
    assert not math.isnan(got[7][1])
    assert (view.short_label, view.long_label) == (f"{ma_type.upper()} 3", f"{ma_type.upper()} 8")


def test_a_window_shows_the_newest_bars_with_averages_from_every_loaded_close() -> None:
    params = StrategyParams(short_window=3, long_window=8, timeframe="5m")
    bars = _bars(40)
    full = candle_view(bars, [], params, None)
    last = candle_view(bars, [], params, 10)
    assert list(last.candles["ts"]) == list(full.candles["ts"][-10:])
    # The window's first bar still has its long MA: it was computed before the window was cut.
    assert list(last.candles["long_ma"]) == list(full.candles["long_ma"][-10:])
    assert not last.candles["long_ma"].isna().any()
    assert last.caption.startswith("5m bars: showing 10 of 40 loaded (the last 10)")
    assert full.caption.startswith("5m bars: showing 40 of 40 loaded;")
    assert "API holds older bars" not in full.caption
    capped = candle_view(bars, [], params, 100, more_in_store=True)
    assert capped.caption.startswith("5m bars: showing 40 of 40 loaded; the API holds older bars")
    assert "times in UTC" in capped.caption


def test_fills_are_marked_on_the_bar_that_holds_them() -> None:
    params = StrategyParams(short_window=3, long_window=8, timeframe="5m")
    bars = _bars(40)
    entry_at = T0 + 35 * FIVE_MIN + timedelta(minutes=3, seconds=10)  # inside the 36th bar
    stop_at = T0 + 38 * FIVE_MIN  # exactly at the 39th bar's open: that bar, not the one before
    fills = [
        _fill(entry_at, OrderReason.ENTRY_LONG),
        _fill(stop_at, OrderReason.STOP_LOSS),
        _fill(T0 + 2 * FIVE_MIN, OrderReason.EXIT_CROSS),  # before the window: not drawn
        _fill(T0 + 37 * FIVE_MIN, OrderReason.ENTRY_LONG, FillStatus.REJECTED),  # never filled: no marker
    ]
    view = candle_view(bars, fills, params, 10)
    marks = view.marks.sort_values("ts").reset_index(drop=True)
    assert list(marks["kind"]) == ["entry long", "stop-out"]
    assert list(marks["bar_ts"]) == [pd.Timestamp(T0 + 35 * FIVE_MIN), pd.Timestamp(T0 + 38 * FIVE_MIN)]
    # Drawn at the middle of their bar, at the fill price.
    assert marks["mid"][0] == pd.Timestamp(T0 + 35 * FIVE_MIN + timedelta(minutes=2, seconds=30))
    assert list(marks["price"]) == [101.5, 101.5]
    assert "2 fills" in view.caption


def test_the_chart_is_valid_vega_lite_with_24_hour_utc_axes() -> None:
    params = StrategyParams(short_window=3, long_window=8, timeframe="5m")
    view = candle_view(_bars(20), [_fill(T0 + 12 * FIVE_MIN, OrderReason.ENTRY_LONG)], params, 100)
    spec = json.dumps(candle_chart(view).to_dict(validate=True))
    assert "utcFormat(datum.value, '%m-%d %H:%M')" in spec
    assert '"formatType": "utc"' in spec
    assert '"type": "utc"' in spec
    assert '"bind": "scales"' in spec  # zoom and pan
    assert time_format("1d") == "%Y-%m-%d"
    assert time_format("15s") == "%H:%M:%S"
