"""The `TradingStrategy` spec model: what it accepts, what it rejects, and how it names the bad field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams
from tradebot.operator.spec import TradingStrategySpec, describe_validation_error, parse_quantity

BACKTEST = {"dataset": {"configMap": {"name": "prices", "key": "ohlcv.csv"}}}


def _error(spec: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        TradingStrategySpec.model_validate(spec)
    return describe_validation_error(caught.value)


def test_defaults_and_camel_case_aliases() -> None:
    spec = TradingStrategySpec.model_validate(
        {"symbols": ["BTCUSDT"], "maType": "ema", "shortWindow": 5, "longWindow": 20, "stopLossPct": 2}
    )
    assert spec.suspend is False
    assert spec.replicas == 1
    assert spec.image is None
    assert spec.backtest is None
    assert spec.strategy_params() == StrategyParams(
        ma_type="ema", short_window=5, long_window=20, stop_loss_pct=2
    )
    assert spec.costs() == Costs()


def test_backtest_section_gives_costs_and_defaults() -> None:
    spec = TradingStrategySpec.model_validate(
        {"symbols": ["X"], "backtest": {**BACKTEST, "commissionPct": 0.1, "slippageBps": 5}}
    )
    assert spec.backtest is not None
    assert spec.backtest.fill == "close"
    assert spec.backtest.initial_cash == 10_000.0
    assert spec.backtest.schedule is None
    assert spec.costs() == Costs(commission_pct=0.1, slippage_bps=5)
    assert type(spec.strategy_params()) is StrategyParams


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"symbols": ["X"], "shortWindow": 30, "longWindow": 10},
            "spec.shortWindow: shortWindow (30) must be less than longWindow (10)",
        ),
        ({"symbols": ["X"], "stopLossPct": 150}, "spec.stopLossPct: Input should be less than 100 (got 150)"),
        ({"symbols": []}, "spec.symbols: List should have at least 1 item"),
        ({"shortWindow": 5}, "spec.symbols: Field required"),
        ({"symbols": ["BTC USDT"]}, "spec.symbols[0]: String should match pattern"),
        (
            {"symbols": ["X"], "replicas": 2},
            "spec.replicas: Input should be less than or equal to 1 (got 2)",
        ),
        ({"symbols": ["X"], "sizing": {"kind": "risk-pct", "value": 1}}, "sizing risk-pct needs stopLossPct"),
        ({"symbols": ["X"], "sizing": {"kind": "qty"}}, "spec.sizing: sizing qty needs a value"),
        (
            {"symbols": ["X"], "risk": {"maxDailyLossPct": 101}},
            "spec.risk.maxDailyLossPct: Input should be less than or equal to 100",
        ),
        (
            {"symbols": ["X"], "backtest": {"dataset": {}}},
            "spec.backtest.dataset: dataset needs exactly one of configMap or path",
        ),
        (
            {
                "symbols": ["X"],
                "backtest": {"dataset": {"path": "/d.csv", "configMap": {"name": "p", "key": "k"}}},
            },
            "exactly one of configMap or path",
        ),
        (
            {"symbols": ["X"], "backtest": {"dataset": {"path": "/d.csv"}, "fill": "open"}},
            "spec.backtest.fill:",
        ),
        ({"symbols": ["X"], "backtest": {**BACKTEST, "schedule": "daily"}}, "spec.backtest.schedule:"),
        ({"symbols": ["X"], "stop_loss": 2}, "spec.stopLoss: Extra inputs are not permitted"),
        # issue 14.13: what the API server would refuse only when the operator applies it.
        (
            {"symbols": ["X"], "backtest": {**BACKTEST, "schedule": "61 * * * *"}},
            "spec.backtest.schedule: '61' is out of range for the minute (0-59)",
        ),
        ({"symbols": ["X"], "backtest": {**BACKTEST, "schedule": "every day at two pm"}}, "should match"),
        ({"symbols": ["X"], "backtest": {**BACKTEST, "schedule": "? * * * *"}}, "'?' is for day of month"),
        (
            {"symbols": ["X"], "resources": {"limits": {"memory": "lots"}}},
            "spec.resources: limits: 'lots' is not a Kubernetes quantity",
        ),
        (
            {"symbols": ["X"], "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}},
            "spec.resources: requests.cpu (2) must not exceed limits.cpu (1500m)",
        ),
        (
            {"symbols": ["X"], "resources": {"limit": {"cpu": "1"}}},
            "spec.resources: takes limits, requests, claims, not limit",
        ),
    ],
)
def test_invalid_specs_are_described_on_one_line_naming_the_camel_case_field(
    spec: dict[str, Any], expected: str
) -> None:
    message = _error(spec)
    assert "\n" not in message
    assert expected in message
    assert "_" not in message.split(":")[0]


@pytest.mark.parametrize("schedule", ["0 2 * * *", "*/15 * * * 1-5", "@daily"])
def test_cron_schedules_are_accepted(schedule: str) -> None:
    spec = TradingStrategySpec.model_validate(
        {"symbols": ["X"], "backtest": {**BACKTEST, "schedule": schedule}}
    )
    assert spec.backtest is not None
    assert spec.backtest.schedule == schedule


def test_cel_rules_carry_a_rule_and_a_message_each() -> None:
    rules = TradingStrategySpec.cel_rules()
    assert len(rules) >= 6
    assert all(set(rule) >= {"rule", "message"} for rule in rules)
    messages = " ".join(rule["message"] for rule in rules)
    for phrase in (
        "shortWindow must be less than longWindow",
        "stopLossPct",
        "at least one symbol",
        "risk-pct needs stopLossPct",
        "needs a value",
        "exactly one of configMap or path",
    ):
        assert phrase in messages


@pytest.mark.parametrize("schedule", ["0 0 ? * mon-fri", "0 0 1 jan,jul *", "0 */6 * * 7", "@hourly"])
def test_cron_names_steps_and_question_marks_are_accepted(schedule: str) -> None:
    spec = TradingStrategySpec.model_validate(
        {"symbols": ["X"], "backtest": {**BACKTEST, "schedule": schedule}}
    )
    assert spec.backtest is not None
    assert spec.backtest.schedule == schedule


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (3, Decimal(3)),
        ("1Gi", Decimal(2**30)),
        ("1e3", Decimal(1000)),
    ],
)
def test_quantities_parse_as_kubernetes_reads_them(quantity: str | int, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


@pytest.mark.parametrize("quantity", ["lots", "-1", "1.5.5", "10Mb", "", True])
def test_what_is_no_quantity_is_refused(quantity: object) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(quantity)
