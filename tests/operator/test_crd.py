"""The generated CRD: committed copies are current, and the real API server enforces it as documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.plugins._proc import REPO_ROOT
from tests.plugins.kube import KubeCluster
from tests.plugins.tradebot_operator import CRD_FILE, MANIFESTS, get_json, kubectl_ok
from tradebot.operator import crd

CHART_CRD = REPO_ROOT / "charts" / "tradebot" / "crds" / CRD_FILE.name
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a label value or Job name: also at most 63
INVALID = sorted((MANIFESTS / "examples" / "invalid").glob("*.yaml"))
# What each invalid example must be told (the CEL rule's message, or the schema's bound).
INVALID_MESSAGES = {
    "short-not-below-long.yaml": "shortWindow must be less than longWindow",
    "stop-loss-150.yaml": "stopLossPct is a percent: more than 0 and less than 100",
    "no-symbols.yaml": "symbols must list at least one symbol",
    "risk-pct-without-stop.yaml": "sizing risk-pct needs stopLossPct",
    "dataset-two-sources.yaml": "backtest.dataset needs exactly one of configMap or path",
    # issue 13.2: one consumer per transactional id, and the message says how to scale instead.
    "replicas-2.yaml": "split the symbols over several TradingStrategies",
    "name-with-dot.yaml": "metadata.name must be lower-case letters, digits and dashes",
    "name-too-long.yaml": "metadata.name must be at most 43 characters",
    # issue 14.13: what the API server would refuse in the owned objects is refused on the resource.
    "resources-not-a-quantity.yaml": "spec.resources.limits.memory in body should match",
    "schedule-not-cron.yaml": "spec.backtest.schedule in body should match",
    # issue 17.3: a sweep's grid is a real, bounded grid run on at least one pod.
    "sweep-empty-range.yaml": "a sweep range's from must not exceed its to (an empty range)",
    "sweep-zero-shards.yaml": "spec.backtest.sweep.shards: Invalid value: 0: spec.backtest.sweep.shards in body should be greater than or equal to 1",
    "sweep-grid-too-large.yaml": "the sweep grid has more than 2000 combinations",
}


@pytest.mark.parametrize("path", [CRD_FILE, CHART_CRD], ids=["manifests", "chart"])
def test_committed_crd_is_the_generated_one(path: Path) -> None:
    assert path.read_text() == crd.render_yaml(), f"regenerate: python -m tradebot.operator.crd > {path}"


def _walk(schema: dict[str, object], path: str = "") -> list[tuple[str, dict[str, object]]]:
    found = [(path, schema)]
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            found += _walk(sub, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, dict):
        found += _walk(items, f"{path}[]")
    return found


def test_crd_schema_has_descriptions_defaults_rules_and_columns() -> None:
    document = crd.build_crd()
    version = document["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [
        path for path, node in _walk(spec) if path and not path.endswith("[]") and "description" not in node
    ]
    assert undocumented == []
    props = spec["properties"]
    assert props["shortWindow"]["default"] == 10
    assert props["replicas"] == {**props["replicas"], "default": 1, "minimum": 0, "maximum": 1}
    assert props["symbols"]["minItems"] == 1
    assert props["backtest"]["properties"]["fill"]["enum"] == ["close", "next-open"]
    assert props["stopLossPct"]["exclusiveMaximum"] is True
    assert all(rule["message"] for rule in spec["x-kubernetes-validations"])
    assert [column["name"] for column in version["additionalPrinterColumns"]] == [
        "Symbols",
        "Short",
        "Long",
        "Stop",
        "Ready",
        "Return",
        "Sharpe",
        "Age",
    ]
    assert document["spec"]["names"]["shortNames"] == ["ts"]
    assert version["subresources"] == {"status": {}}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status["conditions"]["items"]["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert {
        "totalReturnPct",
        "sharpe",
        "maxDrawdownPct",
        "nTrades",
        "winRatePct",
        "finishedAt",
        "jobName",
    } <= set(status["backtest"]["properties"])


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_each_example_is_accepted(
    kube_apiserver: KubeCluster, tradingstrategy_crd: Path, namespace: str, example: Path
) -> None:
    created = kube_apiserver.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example))
    assert created.returncode == 0, created.stderr
    # What the API server stores (with its defaults applied) is a spec the operator's model accepts.
    stored = kube_apiserver.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(example), "-o", "yaml"
    )
    from tradebot.operator.spec import TradingStrategySpec

    TradingStrategySpec.model_validate(yaml.safe_load(stored.stdout)["spec"])


def test_invalid_examples_cover_the_required_cases() -> None:
    assert {path.name for path in INVALID} == set(INVALID_MESSAGES)


@pytest.mark.parametrize("example", INVALID, ids=[path.name for path in INVALID])
def test_each_invalid_example_is_rejected_with_its_message(
    kube_apiserver: KubeCluster, tradingstrategy_crd: Path, namespace: str, example: Path
) -> None:
    rejected = kube_apiserver.kubectl("apply", "-n", namespace, "-f", str(example))
    assert rejected.returncode != 0, f"{example.name} was accepted"
    assert INVALID_MESSAGES[example.name] in rejected.stderr
    assert (
        get_json(
            kube_apiserver, "ts", "-n", namespace, yaml.safe_load(example.read_text())["metadata"]["name"]
        )
        is None
    )


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("a" * 43, True),
        ("a" * 44, False),
        ("x", True),
        ("9lives", True),
        ("sma.fast", False),
        ("-sma", False),  # the API server's own name check
        ("sma-", False),
    ],
)
def test_a_name_is_valid_exactly_when_every_derived_name_is(
    kube_apiserver: KubeCluster, tradingstrategy_crd: Path, namespace: str, name: str, accepted: bool
) -> None:
    """Issue 14.12: the CRD took names the services refuse (dots) or that make invalid labels and Job names."""
    from tradebot.operator import render
    from tradebot.operator.spec import TradingStrategySpec

    manifest = {
        "apiVersion": "tradebot.dev/v1alpha1",
        "kind": "TradingStrategy",
        "metadata": {"name": name},
        "spec": {
            "symbols": ["AAPL"],
            "backtest": {"dataset": {"path": "/data/x.csv"}, "schedule": "0 3 * * *"},
        },
    }
    applied = kube_apiserver.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(manifest)
    )
    assert (applied.returncode == 0) is accepted, applied.stderr
    if accepted:
        spec = TradingStrategySpec.model_validate(manifest["spec"])
        job = render.render_backtest_job(name, namespace, spec, default_image="i")
        cronjob = render.render_backtest_cronjob(name, namespace, spec, default_image="i")
        assert len(cronjob["metadata"]["name"]) <= 52
        derived = [
            job["metadata"]["name"],
            render.render_deployment(name, namespace, spec, default_image="i", shared_env_from=None)[
                "metadata"
            ]["name"],
            render.render_configmap(name, namespace, spec)["metadata"]["name"],
            *(value for value in render.labels(name, render.COMPONENT_STRATEGY).values() if name in value),
        ]
        for value in derived:
            assert DNS_LABEL.match(value), value
            assert len(value) <= 63, value


def test_kubectl_get_ts_shows_the_printer_columns(
    kube_apiserver: KubeCluster, tradingstrategy_crd: Path, namespace: str
) -> None:
    kubectl_ok(kube_apiserver, "apply", "-n", namespace, "-f", str(MANIFESTS / "examples" / "ema-risk.yaml"))
    table = kubectl_ok(kube_apiserver, "get", "ts", "-n", namespace)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "SYMBOLS", "SHORT", "LONG", "STOP", "READY", "RETURN", "SHARPE", "AGE"]
    assert row.split()[:5] == ["ema-risk", '["BTCUSDT","ETHUSDT"]', "12", "26", "2"]
