"""The Live page's candlestick chart under `AppTest`, against a real `tradebot up --embedded` replaying the
GOOG daily series to a strategy on 1d bars (candles) and one on ticks (the tick chart, its fallback)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import APP_PATH, replay_pipeline

TIMEOUT_S = 30.0
DAILY = '{"timeframe": "1d", "short-window": 5, "long-window": 20}'
TICKS = '{"short-window": 5, "long-window": 20}'


@pytest.fixture(scope="module")
def bars_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    strategies = ["--strategy", f"daily={DAILY}", "--strategy", f"ticks={TICKS}"]
    with replay_pipeline(tmp_path_factory.mktemp("up-bars"), strategies) as url:
        yield url


def _page(env: pytest.MonkeyPatch, url: str, strategy: str) -> AppTest:
    env.setenv("TRADEBOT_API_URL", url)
    at = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT_S).run()
    at.selectbox(key="live_strategy").set_value(strategy).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _chart_specs(at: AppTest) -> list[str]:
    """The Vega-Lite specs of the page's charts (AppTest has no typed accessor for them)."""
    return [element.proto.spec for element in at.get("vega_lite_chart")]


def test_a_bar_strategy_shows_candles_of_its_timeframe_with_a_window(
    bars_api_url: str, dashboard_env: pytest.MonkeyPatch
) -> None:
    stored = httpx.get(
        f"{bars_api_url}/bars", params={"timeframe": "1d", "symbol": "GOOG", "limit": 1000}
    ).json()
    assert len(stored["items"]) == 1000
    assert stored["next_cursor"]
    at = _page(dashboard_env, bars_api_url, "daily")
    captions = [c.value for c in at.caption]
    candles = [c for c in captions if c.startswith("1d bars:")]
    # The default window: the newest 100 of the 1000 loaded, and the API holds older ones (no silent cap).
    assert candles, captions
    assert candles[0].startswith("1d bars: showing 100 of 1000 loaded (the last 100)")
    assert "the API holds older bars" in candles[0]
    assert "SMA 5/20" in candles[0]
    assert any("1d candles of daily" in m.value for m in at.markdown)
    specs = _chart_specs(at)
    assert any('"vconcat"' in spec and '"volume"' in spec and "SMA 20" in spec for spec in specs)

    at.radio(key="live_bar_window").set_value("all loaded bars").run()
    assert not at.exception
    assert any(c.value.startswith("1d bars: showing 1000 of 1000 loaded;") for c in at.caption)


def test_a_tick_strategy_keeps_the_tick_chart(bars_api_url: str, dashboard_env: pytest.MonkeyPatch) -> None:
    at = _page(dashboard_env, bars_api_url, "ticks")
    assert not [c.value for c in at.caption if c.value.startswith("1d bars:")]
    assert any("cached prices" in m.value for m in at.markdown)
    with pytest.raises(KeyError):
        at.radio(key="live_bar_window")  # no window selector without candles
    specs = _chart_specs(at)
    assert specs
    assert not any('"vconcat"' in spec for spec in specs)
