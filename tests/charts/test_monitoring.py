"""Prometheus rules (promtool check + unit tests) and the Grafana dashboard (metric names the services expose)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins._proc import REPO_ROOT, require_tool

MONITORING = REPO_ROOT / "manifests" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "tests.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
CHART_RULES = REPO_ROOT / "charts" / "tradebot" / "files" / "prometheus-rules.yaml"

# What the services expose (services' metrics contract), plus Prometheus' own `up`.
METRICS = {
    "tradebot_ticks_total",
    "tradebot_ticks_invalid_total",
    "tradebot_orders_total",
    "tradebot_fills_total",
    "tradebot_tick_to_fill_seconds",
    "tradebot_feed_reconnects_total",
    "tradebot_feed_connected",
    "tradebot_strategy_equity",
    "tradebot_pnl_realized",
    "tradebot_pnl_unrealized",
    "tradebot_consumer_lag",
    "tradebot_http_requests_total",
    "tradebot_build_info",
    "up",
}
HISTOGRAMS = {"tradebot_tick_to_fill_seconds"}
REQUIRED_ALERTS = {
    "FeedDisconnected",
    "NoTicks",
    "HighTickToFillLatency",
    "OrderRejectionsHigh",
    "ConsumerLagHigh",
    "DailyLossNearLimit",
    "ServiceDown",
}
# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "clamp_min",
    "clamp_max", "max_over_time", "min_over_time", "avg_over_time", "abs", "absent", "topk", "bottomk",
    "delta", "deriv", "time", "vector", "scalar", "le", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, strings, durations and grouping removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables such as $__rate_interval
    text = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", " ", text)  # numbers such as 1e-9
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if word.lower() in PROMQL_WORDS or following.startswith("("):
            continue
        names.add(word)
    return names


def base_metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_metric_name_parser() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(tradebot_tick_to_fill_seconds_bucket{job="x"}[5m])))'
    assert metric_names(expr) == {"tradebot_tick_to_fill_seconds_bucket"}
    assert metric_names('up{job=~".*tradebot.*"} == 0') == {"up"}
    assert metric_names("sum(rate(tradebot_fills_total[5m])) / clamp_min(tradebot_pnl_realized, 1e-9)") == {
        "tradebot_fills_total",
        "tradebot_pnl_realized",
    }


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    for path in (RULES, CHART_RULES):
        result = subprocess.run(
            [str(promtool), "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_tests_fire_alerts() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [str(promtool), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=MONITORING,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert len(fired) >= 2, fired
    assert {"FeedDisconnected", "NoTicks"} <= fired


def test_required_alerts_and_recording_rules() -> None:
    rules = _rules()
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert alerts >= REQUIRED_ALERTS, REQUIRED_ALERTS - alerts
    assert any("record" in rule for rule in rules)
    for rule in rules:
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_rules_use_only_exposed_metrics() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for rule in _rules():
        for name in metric_names(rule["expr"]):
            assert name in recorded or base_metric(name) in METRICS, (
                rule.get("alert") or rule.get("record"),
                name,
            )


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def test_grafana_dashboard_parses_and_uses_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: set[str] = set()
    for panel in panels:
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: {target['expr']!r} selects no metric"
            for name in names:
                assert base_metric(name) in METRICS, f"panel {panel['title']!r} uses unknown metric {name}"
            used |= {base_metric(n) for n in names}
    for metric in (
        "tradebot_ticks_total",
        "tradebot_orders_total",
        "tradebot_fills_total",
        "tradebot_tick_to_fill_seconds",
        "tradebot_pnl_realized",
        "tradebot_pnl_unrealized",
        "tradebot_consumer_lag",
        "up",
    ):
        assert metric in used, f"the dashboard has no panel on {metric}"
    quantile_exprs = [
        t["expr"] for p in panels for t in p.get("targets", []) if "histogram_quantile" in t["expr"]
    ]
    assert quantile_exprs, "no tick-to-fill latency quantile panel"
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("ticks", "orders", "fills", "rejections", "latency", "p&l", "lag", "up"):
        assert word in titles, word


@pytest.mark.parametrize(
    "path", [DASHBOARD, REPO_ROOT / "charts" / "tradebot" / "files" / "grafana-dashboard.json"]
)
def test_dashboard_copies_parse(path: Path) -> None:
    assert json.loads(path.read_text())["panels"]
