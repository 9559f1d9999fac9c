"""`tradebot up --strategy ID=JSON`: the parameters take `tradebot backtest`'s flag names as well as camelCase
and snake_case, and a bad one is reported field by field, naming the flag (issue 16.9)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tradebot import up
from tradebot.core.params import RiskLimits, Sizing, StrategyParams

EVERY_FLAG = StrategyParams(
    ma_type="ema",
    short_window=3,
    long_window=9,
    stop_loss_pct=1.5,
    take_profit_pct=4.0,
    trailing_stop_pct=2.5,
    allow_short=True,
    sizing=Sizing(kind="equity-pct", value=5.0),
    qty_step=0.5,
    risk=RiskLimits(
        max_position_qty=7.0,
        max_position_notional=900.0,
        max_gross_exposure=2.0,
        max_daily_loss_pct=3.0,
        cooldown_bars=2,
    ),
)


def test_the_backtest_flag_names_give_the_same_parameters() -> None:
    # Every flag `tradebot backtest` would be given for these parameters, as a JSON key.
    flags: dict[str, object] = {}
    for arg in EVERY_FLAG.to_cli_args():
        name, _, value = arg.removeprefix("--").partition("=")
        flags[name] = value if value else True
    assert {"short-window", "cooldown-bars", "ma", "allow-short"} <= set(flags)
    camel = EVERY_FLAG.to_env_json()
    snake = json.dumps(EVERY_FLAG.model_dump(mode="json"))
    parsed = up.parse_strategies([f"kebab={json.dumps(flags)}", f"camel={camel}", f"snake={snake}"])
    assert parsed == [("kebab", EVERY_FLAG), ("camel", EVERY_FLAG), ("snake", EVERY_FLAG)]


def test_nested_risk_takes_kebab_names_too() -> None:
    [(_, params)] = up.parse_strategies(['s={"short-window":2,"risk":{"max-daily-loss-pct":4}}'])
    assert params.short_window == 2
    assert params.risk.max_daily_loss_pct == 4.0


def test_each_bad_field_is_named_with_its_flag_and_reason() -> None:
    spec = 'fast={"short-window":0,"sizing":"qty","risk":{"cooldownBars":-1},"stop_loss_pct":200,"colour":1}'
    with pytest.raises(SystemExit) as raised:
        up.parse_strategies([spec])
    lines = str(raised.value.code).splitlines()
    assert lines[0] == "tradebot up: error: --strategy fast:"
    assert sorted(line.strip() for line in lines[1:]) == [
        "colour: unknown parameter (got 1)",
        "risk.cooldown-bars (--cooldown-bars): Input should be greater than or equal to 0 (got -1)",
        "short-window (--short-window): Input should be greater than or equal to 1 (got 0)",
        "sizing (--sizing): sizing qty needs a value, e.g. qty:10 (got 'qty')",
        "stop-loss-pct (--stop-loss-pct): Input should be less than 100 (got 200)",
    ]


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ('{"short-window":40}', "short_window (40) must be less than long_window (30)"),
        ("[5]", "the parameters must be a JSON object"),
        ('{"short-window":', "not JSON"),
        ('{"timeframe":"7m"}', "timeframe"),
    ],
)
def test_the_command_exits_with_the_reason_on_stderr(raw: str, said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tradebot.cli", "up", "--embedded", "--strategy", f"fast={raw}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "tradebot up: error: --strategy fast:" in done.stderr
    assert said in done.stderr
    assert "validation error for StrategyParams" not in done.stderr
