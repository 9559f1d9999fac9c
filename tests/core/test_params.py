"""StrategyParams: validation with clear messages, sizing text, camelCase aliases, CLI args."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tradebot.core.params import Sizing, StrategyParams


def test_short_window_must_be_below_long_window() -> None:
    with pytest.raises(ValidationError, match=r"short_window \(30\) must be less than long_window \(30\)"):
        StrategyParams(short_window=30, long_window=30)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"stop_loss_pct": 0}, "stop_loss_pct"),
        ({"stop_loss_pct": 150}, "stop_loss_pct"),
        ({"trailing_stop_pct": -1}, "trailing_stop_pct"),
        ({"ma_type": "wma"}, "ma_type"),
        ({"risk": {"cooldown_bars": -1}}, "risk.cooldown_bars"),
        ({"bogus": 1}, "bogus"),
        ({"timeframe": "2m"}, "timeframe"),
        ({"timeframe": "1H"}, "timeframe"),
        ({"exit_rule": "nearest"}, "exit_rule"),
    ],
)
def test_bad_values_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        StrategyParams.model_validate(data)
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert field in locs


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("all-in", "all-in", None),
        ("qty:5", "qty", 5.0),
        ("notional:1000", "notional", 1000.0),
        ("equity-pct:10", "equity-pct", 10.0),
        ("risk-pct:1", "risk-pct", 1.0),
    ],
)
def test_sizing_text(text: str, kind: str, value: float | None) -> None:
    sizing = Sizing.model_validate(text)
    assert (sizing.kind, sizing.value) == (kind, value)
    assert Sizing.model_validate(str(sizing)) == sizing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qty", "needs a value"),
        ("lots:3", "unknown sizing"),
        ("qty:x", "needs a number"),
        ("equity-pct:150", "at most 100"),
    ],
)
def test_bad_sizing_text(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Sizing.model_validate(text)


def test_risk_sizing_needs_a_stop() -> None:
    with pytest.raises(ValidationError, match="needs stop_loss_pct"):
        StrategyParams(sizing=Sizing(kind="risk-pct", value=1))


def test_camel_case_and_snake_case_both_accepted() -> None:
    camel = StrategyParams.model_validate(
        {
            "shortWindow": 5,
            "longWindow": 20,
            "stopLossPct": 2,
            "risk": {"cooldownBars": 3},
            "exitRule": "target-first",
        }
    )
    snake = StrategyParams.model_validate(
        {
            "short_window": 5,
            "long_window": 20,
            "stop_loss_pct": 2,
            "risk": {"cooldown_bars": 3},
            "exit_rule": "target-first",
        }
    )
    assert camel == snake
    dumped = camel.model_dump(by_alias=True)
    assert (dumped["shortWindow"], dumped["exitRule"], dumped["timeframe"]) == (5, "target-first", "tick")


def test_the_defaults_keep_todays_behaviour_and_the_cli_args_name_the_timeframe_always() -> None:
    params = StrategyParams()
    assert (params.timeframe, params.exit_rule) == ("tick", "stop-first")
    # The CLI's own default is `auto` (the data's interval): parameters on tick must say tick.
    assert "--timeframe=tick" in params.to_cli_args()
    assert not any(arg.startswith("--exit-rule") for arg in params.to_cli_args())
    hourly = StrategyParams(timeframe="1h", exit_rule="target-first").to_cli_args()
    assert {"--timeframe=1h", "--exit-rule=target-first"} <= set(hourly)


def test_the_cli_choices_are_the_models() -> None:
    from tradebot.backtest.cliargs import EXIT_RULE_CHOICES, TIMEFRAME_CHOICES
    from tradebot.core.bars import TIMEFRAMES
    from tradebot.core.params import EXIT_RULES

    assert TIMEFRAME_CHOICES == TIMEFRAMES
    assert EXIT_RULE_CHOICES == EXIT_RULES


def test_cli_args_reproduce_the_params() -> None:
    import argparse

    from tradebot.backtest.cliargs import add_strategy_arguments, build_config

    params = StrategyParams.model_validate(
        {
            "ma_type": "ema",
            "short_window": 7,
            "long_window": 21,
            "stop_loss_pct": 2.5,
            "trailing_stop_pct": 4,
            "allow_short": True,
            "timeframe": "15m",
            "exit_rule": "open-nearest",
            "sizing": "risk-pct:1",
            "qty_step": 0.01,
            "risk": {"cooldown_bars": 2, "max_daily_loss_pct": 3, "max_gross_exposure": 2},
        }
    )
    parser = argparse.ArgumentParser()
    add_strategy_arguments(parser)
    config = build_config(parser.parse_args(params.to_cli_args()))
    assert config.params == params
    # Tick parameters too come back as tick, not as the CLI's `auto`.
    tick = StrategyParams(short_window=3, long_window=9)
    assert build_config(parser.parse_args(tick.to_cli_args())).params == tick


def test_env_json_round_trip() -> None:
    params = StrategyParams(short_window=3, long_window=9, take_profit_pct=5)
    assert StrategyParams.model_validate_json(params.to_env_json()) == params
