"""The Backtest page under `AppTest`: one run, a sweep, and a bad upload."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP_PATH
from tradebot.core.params import MAX_WINDOW, StrategyParams

TIMEOUT_S = 90.0


@pytest.fixture
def backtest(dashboard_env: pytest.MonkeyPatch) -> AppTest:
    dashboard_env.setenv("TRADEBOT_API_URL", "http://127.0.0.1:9")  # the page never needs the API
    at = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT_S).run()
    at.switch_page("backtest_page.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Backtest"]
    return at


def test_a_backtest_shows_metrics_and_trades(backtest: AppTest) -> None:
    at = backtest
    assert str(at.selectbox(key="bt_file").value).endswith("historical_data.csv")
    at.number_input(key="bt_short").set_value(10)
    at.number_input(key="bt_long").set_value(30)
    at.button(key="bt_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["trades"]) > 0
    stats = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    n_trades = stats.loc[stats["metric"] == "n_trades", "value"].iloc[0]
    assert int(n_trades) == int(metrics["trades"])


def test_invalid_windows_are_an_error_not_a_traceback(backtest: AppTest) -> None:
    at = backtest
    at.number_input(key="bt_short").set_value(50)
    at.number_input(key="bt_long").set_value(20).run()
    assert not at.exception
    assert any("short_window (50) must be less than long_window (20)" in e.value for e in at.error)
    assert at.button(key="bt_run").disabled


def test_a_sweep_shows_a_ranked_table(backtest: AppTest) -> None:
    at = backtest
    at.text_input(key="bt_sweep_short").set_value("5:15:5")
    at.text_input(key="bt_sweep_long").set_value("20,40")
    at.selectbox(key="bt_sweep_metric").set_value("total_return_pct")
    at.button(key="bt_sweep_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "short_window" in d.value.columns)
    assert len(table) == 6
    returns = table["total_return_pct"].tolist()
    assert returns == sorted(returns, reverse=True)
    assert at.get("progress")


def test_a_bad_upload_shows_the_data_error(backtest: AppTest) -> None:
    at = backtest
    at.radio(key="bt_source").set_value("upload a CSV").run()
    bad = b"timestamp,open,high,low,close\n2020-01-01,1,2,0.5,1.5\n2020-01-02,1,2,0.5,abc\n"
    at.file_uploader(key="bt_upload").set_value(("bad.csv", bad, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("bad.csv line 3: close is not a number ('abc')" in e for e in errors), errors
    assert at.button(key="bt_run").disabled


def test_an_upload_over_the_limit_is_refused_with_a_clear_message(
    backtest: AppTest, dashboard_env: pytest.MonkeyPatch
) -> None:
    """Issue 14.14: any size was read into memory and parsed (the pod's memory limit is 768Mi)."""
    dashboard_env.setenv("TRADEBOT_UPLOAD_MAX_MB", "1")
    at = backtest
    at.radio(key="bt_source").set_value("upload a CSV").run()
    row = b"2020-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
    big = b"timestamp,open,high,low,close,volume\n" + row * (1024 * 1024 // len(row) + 10)
    at.file_uploader(key="bt_upload").set_value(("big.csv", big, "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(
        "big.csv is 1.0 MB: uploads are limited to 1 MB (TRADEBOT_UPLOAD_MAX_MB)" in e for e in errors
    ), errors
    assert at.button(key="bt_run").disabled


def test_the_parameters_start_at_the_models_defaults_and_bounds(backtest: AppTest) -> None:
    at, defaults = backtest, StrategyParams()
    short, long_ = at.number_input(key="bt_short"), at.number_input(key="bt_long")
    assert (short.value, long_.value) == (defaults.short_window, defaults.long_window)
    assert (short.min, short.max) == (
        1,
        MAX_WINDOW - 1,
    )  # StrategyParams.short_window: ge=1, le=MAX_WINDOW - 1
    assert at.number_input(key="bt_qty_step").value == defaults.qty_step
    assert at.number_input(key="bt_stop").value == 0.0  # None: off
    assert at.number_input(key="bt_slippage").max == 1000.0  # Costs.slippage_bps: le=1000
    assert at.selectbox(key="bt_ma").value == defaults.ma_type
    assert at.selectbox(key="bt_sizing").value == defaults.sizing.kind
    assert at.number_input(key="bt_sizing_value").value is None  # all-in takes no value

    # A sizing kind that needs a value, without one: the model's own message, no traceback.
    at.selectbox(key="bt_sizing").set_value("qty").run()
    assert not at.exception
    assert any("sizing qty needs a value" in e.value for e in at.error), [e.value for e in at.error]


def test_statistics_read_as_money_percent_counts_and_durations() -> None:
    """Issue 16.12: `47.000` trades, `6.333e+04` equity and `3116` days were what the page showed."""
    from tradebot.dashboard.backtest_page import format_stat, number_formats, readable_days

    assert format_stat("n_trades", 47.0) == "47"
    assert format_stat("max_drawdown_duration_bars", 1401) == "1,401"
    assert format_stat("equity_final", 63328.77000000001) == "63,328.77"
    assert format_stat("avg_loss", -2572.4561) == "-2,572.46"
    assert format_stat("total_return_pct", 533.2877) == "533.29%"
    assert format_stat("win_rate_pct", 63.63636) == "63.64%"
    assert format_stat("sharpe", 1.0833788) == "1.083"
    assert format_stat("profit_factor", float("inf")) == "-"
    assert format_stat("calmar", None) == "-"
    assert format_stat("duration_days", 3116.0) == "3,116 days (8.5 years)"
    assert format_stat("max_drawdown_duration_days", 12.5) == "12.5 days"
    assert format_stat("start", "2004-08-19T00:00:00+00:00") == "2004-08-19 00:00 UTC"
    assert readable_days(0.1875) == "04:30:00"
    formats = number_formats(["n_trades", "short_window", "entry_bar", "pnl", "return_pct", "sortino", "qty"])
    assert formats == {
        "n_trades": "%,d", "short_window": "%,d", "entry_bar": "%,d", "pnl": "%,.2f",
        "return_pct": "%,.2f%%", "sortino": "%.3f", "qty": "%,.6g",
    }  # fmt: skip


def test_the_pages_headline_metrics_are_formatted(backtest: AppTest) -> None:
    at = backtest
    at.button(key="bt_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["total return"].endswith("%")
    assert metrics["win rate"].endswith("%")
    assert "." not in metrics["trades"]
    stats = next(d.value for d in at.dataframe if "metric" in d.value.columns)
    values = dict(zip(stats["metric"], stats["value"], strict=True))
    assert values["bars"] == "2,148"
    assert values["equity_final"].count(".") == 1
    assert len(values["equity_final"].split(".")[1]) == 2


def test_the_timeframe_starts_at_auto_and_daily_bars_stop_inside_the_bar(backtest: AppTest) -> None:
    """As `tradebot backtest`: the sample's daily bars trade as 1d bars, so stops fill at their level."""
    at = backtest
    assert at.selectbox(key="bt_timeframe").value == "auto"
    at.number_input(key="bt_short").set_value(10)
    at.number_input(key="bt_long").set_value(30)
    at.number_input(key="bt_stop").set_value(2.0)
    at.button(key="bt_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption]
    assert any("timeframe 1d (auto: the data's own interval)" in c for c in captions), captions
    daily = next(d.value for d in at.dataframe if "exit_reason" in d.value.columns)
    at.selectbox(key="bt_timeframe").set_value("tick")
    at.button(key="bt_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.startswith("timeframe tick, fill close") for c in (c.value for c in at.caption))
    ticked = next(d.value for d in at.dataframe if "exit_reason" in d.value.columns)
    # On 1d bars a stop fills at the stop level, inside the bar; on tick at a close.
    closes = set(pd.read_csv(Path(__file__).resolve().parents[2] / "data" / "historical_data.csv")["close"])
    stops = {
        "daily": daily[daily["exit_reason"] == "stop_loss"],
        "tick": ticked[ticked["exit_reason"] == "stop_loss"],
    }
    assert len(stops["daily"]) > 0
    assert len(stops["tick"]) > 0
    assert not set(stops["daily"]["exit_price"]) <= closes
    assert set(stops["tick"]["exit_price"]) <= closes
