"""The Prometheus rules: valid (`promtool check rules`), unit-tested (`promtool test rules`) with a firing
and a quiet case for every alert, documented (summary, description, a runbook section in README.md), and
written only over metrics the catalogue lists."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.monitoring.catalogue import (
    CHART_RULES,
    MONITORING,
    RULE_TESTS,
    RULES,
    known_metric,
    metric_names,
)
from tests.plugins._proc import REPO_ROOT, require_tool

README = REPO_ROOT / "README.md"
RUNBOOK_PREFIX = "https://github.com/tradebot/tradebot/blob/main/README.md#"
# What an operator of a trading system must hear about (issue: monitoring).
REQUIRED_ALERTS = {
    "TradebotTargetDown",
    "TradebotPodNotReady",
    "TradebotFeedDisconnected",
    "TradebotFeedStale",
    "TradebotConsumerLagHigh",
    "TradebotOrderRejectionsSpiking",
    "TradebotDrawdownHigh",
    "TradebotStrategyHalted",
    "TradebotBacktestFailed",
    "TradebotFeedRejectionsHigh",
    "TradebotTickToFillLatencyHigh",
    "TradebotOperatorPermanentErrors",
    "TradebotApiErrors",
}
# The recordings the dashboard and the alerts build on: rates, ratios and quantiles over the catalogue.
REQUIRED_RECORDS = {
    "tradebot:feed_ticks_published:rate1m",
    "tradebot:feed_messages_rejected:rate5m",
    "tradebot:strategy_ticks:rate1m",
    "tradebot:strategy_orders:rate5m",
    "tradebot:executor_orders_rejected:rate5m",
    "tradebot:executor_rejection_ratio:rate5m",
    "tradebot:executor_tick_to_fill_seconds:p50",
    "tradebot:executor_tick_to_fill_seconds:p99",
    "tradebot:strategy_batch_seconds:p99",
    "tradebot:consumer_lag:max",
    "tradebot:executor_pnl:total",
    "tradebot:http_5xx_ratio:rate5m",
}


def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _groups() for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, check=False, cwd=MONITORING
    )


def test_rules_pass_promtool_check_and_the_chart_ships_the_same_file() -> None:
    for path in (RULES, CHART_RULES):
        result = _promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        "cp manifests/monitoring/prometheus-rules.yaml charts/tradebot/files/"
    )


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - fired == set(), "alerts never seen firing in tests.yaml"
    assert alerts - quiet == set(), "alerts never seen quiet in tests.yaml"
    assert fired | quiet <= alerts, "tests.yaml names alerts the rules do not have"


def test_required_alerts_exist_and_each_is_documented_with_a_runbook() -> None:
    alerts = _alerts()
    assert REQUIRED_ALERTS - set(alerts) == set()
    headings = set(re.findall(r"^### (\w+)$", README.read_text(), flags=re.MULTILINE))
    runbook = README.read_text().split("\n## Runbook\n", 1)
    assert len(runbook) == 2, "README.md has no Runbook section"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert len(annotations["description"]) > len(annotations["summary"]) / 2, name
        assert annotations["runbook_url"] == RUNBOOK_PREFIX + name.lower(), name
        assert name in headings, f"README.md has no `### {name}` runbook section"
        assert f"\n### {name}\n" in runbook[1], f"the runbook section of {name} is outside `## Runbook`"


def test_rules_select_only_catalogued_metrics_and_use_the_global_interval() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    assert recorded, "no recording rules"
    for group in _groups():
        assert "interval" not in group, f"group {group['name']} overrides the evaluation interval"
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, rule
        for name in names:
            assert name in recorded or known_metric(name), (rule.get("alert") or rule.get("record"), name)


def test_recording_rules_are_named_by_convention_over_tradebot_metrics() -> None:
    groups = {group["name"]: group["rules"] for group in _groups()}
    records = {rule["record"]: rule["expr"] for rule in groups["tradebot.recording"]}
    assert REQUIRED_RECORDS - set(records) == set(), "required recording rules are missing"
    assert all("alert" in rule for rule in groups["tradebot.alerts"]), (
        "a recording rule outside tradebot.recording"
    )
    for record, expr in records.items():
        assert re.fullmatch(r"tradebot:[a-z0-9_]+:[a-z0-9_]+", record), (
            f"{record}: not tradebot:<metric>:<ops>"
        )
        # Only our own metrics: the recordings must have data wherever the services run, kube-state-metrics or not.
        for name in metric_names(expr):
            assert name.startswith("tradebot_"), (record, name)
            assert known_metric(name), (record, name)


def test_every_fired_alert_checks_its_summary() -> None:
    alerts = _alerts()
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            for expected in case.get("exp_alerts") or []:
                name = case["alertname"]
                assert expected["exp_labels"]["severity"] == alerts[name]["labels"]["severity"], name
                assert expected["exp_annotations"].get("summary"), f"{test['name']}: {name} without a summary"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.99, sum by (le) (rate(x_bucket{job="a"}[5m])))', {"x_bucket"}),
        ('up{job=~".*tradebot.*"} == 0', {"up"}),
        ("sum(rate(a_total[5m])) / clamp_min(b, 1e-9) > 0.05", {"a_total", "b"}),
        ("max without (instance, pod) (c) == 1 and d > 120", {"c", "d"}),
    ],
)
def test_metric_name_parser(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
