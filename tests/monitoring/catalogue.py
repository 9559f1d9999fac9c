"""The metrics catalogue in services/README.md, and the metric names a PromQL expression selects.

One parser for every monitoring test: the rules, the dashboard and the services' real `/metrics` are all
checked against the same catalogue.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.plugins._proc import REPO_ROOT

SERVICES_README = REPO_ROOT / "services" / "README.md"
MONITORING = REPO_ROOT / "manifests" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "tests.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
CHART_RULES = REPO_ROOT / "charts" / "tradebot" / "files" / "prometheus-rules.yaml"
CHART_DASHBOARD = REPO_ROOT / "charts" / "tradebot" / "files" / "grafana-dashboard.json"

# Metrics that come from elsewhere than our services: Prometheus itself and kube-state-metrics.
EXTERNAL_METRICS = {
    "up",
    "kube_pod_status_ready",
    "kube_pod_status_phase",
    "kube_deployment_status_replicas_available",
    "kube_deployment_spec_replicas",
}
# Section of the catalogue that applies to every service.
EVERY_SERVICE = "every service (not the operator)"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    type: str  # counter | gauge | histogram
    labels: frozenset[str]
    section: str  # "every service", "feed", ...


def catalogue(path: Path = SERVICES_README) -> list[CatalogueEntry]:
    """Every row of the `## Metrics` tables, with the `###` section it is listed under."""
    text = path.read_text()
    start = text.index("\n## Metrics")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    entries: list[CatalogueEntry] = []
    section = ""
    for line in body.splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
            continue
        row = re.match(r"^\|\s*`(tradebot_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if row:
            labels = frozenset(re.findall(r"`([a-z_]+)`", row.group(3)))
            entries.append(CatalogueEntry(row.group(1), row.group(2), labels, section))
    return entries


def catalogued_names() -> set[str]:
    return {entry.name for entry in catalogue()}


def histograms() -> set[str]:
    return {entry.name for entry in catalogue() if entry.type == "histogram"}


# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without",
    "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "clamp_min",
    "clamp_max", "max_over_time", "min_over_time", "avg_over_time", "abs", "absent", "topk", "bottomk",
    "delta", "deriv", "time", "vector", "scalar", "le", "inf", "nan", "label_replace", "changes", "resets",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, strings, durations and grouping removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables such as $__rate_interval
    text = re.sub(
        r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?[smhdwy]?", " ", text
    )  # numbers, durations
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if word.lower() in PROMQL_WORDS or following.startswith("("):
            continue
        names.add(word)
    return names


def base_metric(name: str) -> str:
    """`x_bucket`, `x_sum`, `x_count` of a catalogued histogram `x` are `x`."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in histograms():
            return name[: -len(suffix)]
    return name


def known_metric(name: str) -> bool:
    return base_metric(name) in catalogued_names() or name in EXTERNAL_METRICS


def exposition(url: str) -> dict[str, tuple[str, set[frozenset[str]]]]:
    """The `tradebot_*` metric families a target serves: name (as catalogued) -> type, label sets seen."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    families: dict[str, tuple[str, set[frozenset[str]]]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("tradebot_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {frozenset(sample.labels) - {"le"} for sample in family.samples}
        families[name] = (family.type, labels)
    return families
