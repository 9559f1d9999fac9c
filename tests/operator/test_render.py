"""Rendering a `TradingStrategy` into the objects the operator owns: pure functions, no API server."""

from __future__ import annotations

import argparse
import json
from typing import Any

import kopf
import pytest
import yaml
from pydantic import ValidationError

from tests.plugins._proc import REPO_ROOT
from tradebot.backtest.cliargs import build_config
from tradebot.backtest.command import build_parser
from tradebot.operator import render
from tradebot.operator.spec import TradingStrategySpec

IMAGE = "ghcr.io/tradebot/tradebot:0.1.0"
BASE: dict[str, Any] = {
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "maType": "ema",
    "shortWindow": 12,
    "longWindow": 26,
    "stopLossPct": 2,
}
BACKTEST: dict[str, Any] = {
    "dataset": {"configMap": {"name": "prices", "key": "ohlcv.csv"}},
    "fill": "next-open",
    "commissionPct": 0.1,
    "slippageBps": 5,
    "initialCash": 100000,
}


def _spec(**changes: Any) -> TradingStrategySpec:
    return TradingStrategySpec.model_validate({**BASE, **changes})


def _deployment(spec: TradingStrategySpec, *, shared: str | None = "tradebot-shared-env") -> dict[str, Any]:
    return render.render_deployment("alpha", "ns1", spec, default_image=IMAGE, shared_env_from=shared)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_configmap_holds_the_strategy_environment() -> None:
    configmap = render.render_configmap("alpha", "ns1", _spec())
    assert configmap["metadata"]["name"] == "alpha-strategy"
    assert configmap["metadata"]["namespace"] == "ns1"
    data = configmap["data"]
    assert data["TRADEBOT_STRATEGY_ID"] == "alpha"
    assert data["TRADEBOT_STRATEGY_SYMBOLS"] == "BTCUSDT,ETHUSDT"
    params = json.loads(data["TRADEBOT_STRATEGY_PARAMS"])
    assert params["ma_type"] == "ema"
    assert (params["short_window"], params["long_window"], params["stop_loss_pct"]) == (12, 26, 2)


def test_deployment_labels_env_probes_and_security_context() -> None:
    deployment = _deployment(_spec())
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "tradebot"
    assert labels["app.kubernetes.io/instance"] == "alpha"
    assert labels["app.kubernetes.io/component"] == "strategy"
    assert labels["app.kubernetes.io/managed-by"] == "tradebot-operator"
    assert labels["app.kubernetes.io/part-of"] == "tradebot"
    selector = deployment["spec"]["selector"]["matchLabels"]
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert deployment["spec"]["replicas"] == 1

    container = _container(deployment)
    assert container["image"] == IMAGE
    assert container["envFrom"] == [
        {"secretRef": {"name": "tradebot-shared-env", "optional": True}},
        {"configMapRef": {"name": "alpha-strategy"}},
    ]
    assert {"name": "TRADEBOT_HTTP_PORT", "value": str(render.HTTP_PORT)} in container["env"]
    # Probes and metrics on the port named "metrics", the one the chart's NetworkPolicy opens to Prometheus.
    assert {"name": "TRADEBOT_METRICS_PORT", "value": str(render.METRICS_PORT)} in container["env"]
    assert container["ports"] == [{"name": "metrics", "containerPort": render.METRICS_PORT}]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics", probe
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["resources"] == render.DEFAULT_STRATEGY_RESOURCES
    assert _container(_deployment(_spec(), shared=None))["envFrom"] == [
        {"configMapRef": {"name": "alpha-strategy"}}
    ]


def _pod_templates(spec: TradingStrategySpec) -> dict[str, dict[str, Any]]:
    """The pod spec of every workload the operator makes for `spec` (which has a scheduled backtest)."""
    cronjob = render.render_backtest_cronjob("alpha", "ns1", spec, default_image=IMAGE)
    job = render.render_backtest_job("alpha", "ns1", spec, default_image=IMAGE)
    return {
        "Deployment": _deployment(spec)["spec"]["template"]["spec"],
        "Job": job["spec"]["template"]["spec"],
        "CronJob": cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    }


def test_operator_made_pods_are_as_restricted_as_the_charts() -> None:
    """Issue 14.9: no ServiceAccount token, bounded resources, the chart's securityContext, a bounded /tmp."""
    chart_values = yaml.safe_load((REPO_ROOT / "charts" / "tradebot" / "values.yaml").read_text())
    spec = _spec(backtest={**BACKTEST, "schedule": "0 2 * * *"})
    for kind, pod in _pod_templates(spec).items():
        assert pod["automountServiceAccountToken"] is False, kind
        assert pod["enableServiceLinks"] is False, kind
        assert pod["securityContext"] == chart_values["podSecurityContext"], kind
        (container,) = pod["containers"]
        assert container["securityContext"] == chart_values["securityContext"], kind
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], kind
        assert {"name": "tmp", "emptyDir": {"sizeLimit": render.TMP_SIZE_LIMIT}} in pod["volumes"], kind
        resources = container["resources"]
        assert set(resources["limits"]) == set(resources["requests"]) == {"cpu", "memory"}, kind
    # The spec's resources replace the defaults everywhere, backtests included.
    wanted = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "2Gi"}}
    for kind, pod in _pod_templates(spec.model_copy(update={"resources": wanted})).items():
        assert pod["containers"][0]["resources"] == wanted, kind


def test_image_and_resources_come_from_the_spec() -> None:
    resources = {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}}
    container = _container(_deployment(_spec(image="registry.example/tb:2", resources=resources)))
    assert container["image"] == "registry.example/tb:2"
    assert container["resources"] == resources


def _config_hash(deployment: dict[str, Any]) -> str:
    on_deployment = deployment["metadata"]["annotations"][render.CONFIG_HASH_ANNOTATION]
    on_pods = deployment["spec"]["template"]["metadata"]["annotations"][render.CONFIG_HASH_ANNOTATION]
    assert on_deployment == on_pods
    value: str = on_pods
    return value


def test_config_hash_changes_with_the_spec_and_only_then() -> None:
    base = _config_hash(_deployment(_spec()))
    assert _config_hash(_deployment(_spec())) == base
    assert _config_hash(_deployment(_spec(shortWindow=13))) != base
    assert _config_hash(_deployment(_spec(symbols=["BTCUSDT"]))) != base
    assert _config_hash(_deployment(_spec(image="other:1"))) != base
    # Scaling is not a configuration change: pods are not rolled for it.
    assert _config_hash(_deployment(_spec(replicas=0))) == base


def test_suspend_scales_to_zero() -> None:
    assert _deployment(_spec(suspend=True))["spec"]["replicas"] == 0
    assert _deployment(_spec(replicas=0))["spec"]["replicas"] == 0
    assert _deployment(_spec(replicas=1))["spec"]["replicas"] == 1


def test_no_spec_renders_more_than_one_replica() -> None:
    """issue 13.2: every pod of a strategy has its one transactional id; two would fence each other."""
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        _spec(replicas=2)


def test_owner_reference_is_set_by_adoption() -> None:
    owner = {
        "apiVersion": "tradebot.dev/v1alpha1",
        "kind": "TradingStrategy",
        "metadata": {"name": "alpha", "namespace": "ns1", "uid": "1234-abcd"},
    }
    deployment = _deployment(_spec())
    kopf.adopt(deployment, owner=kopf.Body(owner))  # type: ignore[arg-type]
    (reference,) = deployment["metadata"]["ownerReferences"]
    assert reference["uid"] == "1234-abcd"
    assert reference["kind"] == "TradingStrategy"
    assert reference["controller"] is True


def _parse_backtest_cli(args: list[str]) -> argparse.Namespace:
    assert args[0] == "backtest"
    parser = argparse.ArgumentParser()
    build_parser(parser)
    return parser.parse_args(args[1:])


def test_backtest_job_runs_the_backtest_cli_with_the_resources_parameters() -> None:
    spec = _spec(backtest=BACKTEST, sizing={"kind": "risk-pct", "value": 1}, allowShort=True)
    job = render.render_backtest_job("alpha", "ns1", spec, default_image=IMAGE)
    assert job["kind"] == "Job"
    digest = render.backtest_hash(spec)
    assert job["metadata"]["name"] == f"alpha-backtest-{digest}"
    assert job["metadata"]["labels"][render.BACKTEST_HASH_LABEL] == digest
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:3] == ["backtest", "--data", "/data/ohlcv.csv"]
    for expected in (
        ["--fill", "next-open"],
        ["--commission-pct", "0.1"],
        ["--slippage-bps", "5"],
        ["--initial-cash", "100000"],
    ):
        index = args.index(expected[0])
        assert args[index : index + 2] == expected
    assert args[-3:] == ["--json", "--result-file", "/dev/termination-log"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert {"name": "dataset", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    assert {
        "name": "dataset",
        "configMap": {"name": "prices", "items": [{"key": "ohlcv.csv", "path": "ohlcv.csv"}]},
    } in pod["volumes"]

    # The arguments mean to the real CLI exactly what the resource says.
    parsed = _parse_backtest_cli(args)
    assert parsed.data == "/data/ohlcv.csv"
    assert parsed.json is True
    assert parsed.result_file == "/dev/termination-log"
    config = build_config(parsed)
    assert config.params == spec.strategy_params()
    assert config.costs.commission_pct == 0.1
    assert config.costs.slippage_bps == 5
    assert config.initial_cash == 100000
    assert config.fill == "next-open"


def test_backtest_from_a_path_in_the_image_mounts_no_dataset() -> None:
    spec = _spec(backtest={"dataset": {"path": "/app/data/prices.csv"}})
    job = render.render_backtest_job("alpha", "ns1", spec, default_image=IMAGE)
    pod = job["spec"]["template"]["spec"]
    assert [volume["name"] for volume in pod["volumes"]] == ["tmp"]
    assert pod["containers"][0]["args"][:3] == ["backtest", "--data", "/app/data/prices.csv"]


def test_backtest_hash_follows_parameters_not_replicas_or_schedule() -> None:
    spec = _spec(backtest=BACKTEST)
    digest = render.backtest_hash(spec)
    assert render.backtest_hash(_spec(backtest=BACKTEST, replicas=0, suspend=True)) == digest
    assert render.backtest_hash(_spec(backtest={**BACKTEST, "schedule": "@daily"})) == digest
    assert render.backtest_hash(_spec(backtest=BACKTEST, shortWindow=13)) != digest
    assert render.backtest_hash(_spec(backtest={**BACKTEST, "commissionPct": 0.2})) != digest


def test_schedule_makes_a_cronjob_running_the_same_job() -> None:
    spec = _spec(backtest={**BACKTEST, "schedule": "0 2 * * *"})
    cronjob = render.render_backtest_cronjob("alpha", "ns1", spec, default_image=IMAGE)
    job = render.render_backtest_job("alpha", "ns1", spec, default_image=IMAGE)
    assert cronjob["kind"] == "CronJob"
    assert cronjob["metadata"]["name"] == "alpha-backtest"
    assert cronjob["spec"]["schedule"] == "0 2 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["jobTemplate"]["spec"] == job["spec"]


@pytest.mark.parametrize(
    ("desired", "existing", "expected"),
    [
        ({"a": 1}, None, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 2, "d": 3}]}}, False),
        ({"a": {"b": [1]}}, {"a": {"b": [1, 2]}}, True),
        ({"a": 1}, {"a": 2}, True),
    ],
)
def test_differs_compares_only_the_fields_we_set(
    desired: dict[str, Any], existing: dict[str, Any] | None, expected: bool
) -> None:
    assert render.differs(desired, existing) is expected


def test_shared_env_copy_for_a_strategy_in_another_namespace() -> None:
    data = {"TRADEBOT_KAFKA_BOOTSTRAP": "a2Fma2E6OTA5Mg=="}
    copy = render.render_shared_env_copy("ema", "team-a", data)
    assert copy["kind"] == "Secret"
    assert copy["metadata"]["name"] == "ema-shared-env"
    assert copy["metadata"]["namespace"] == "team-a"
    assert copy["metadata"]["labels"][render.STRATEGY_LABEL] == "ema"
    assert copy["data"] == data
    deployment = render.render_deployment(
        "ema", "team-a", _spec(), default_image="img:1", shared_env_from=copy["metadata"]["name"]
    )
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from[0] == {"secretRef": {"name": "ema-shared-env", "optional": True}}


def test_a_strategy_can_have_its_own_kafka_user() -> None:
    """Issue 14.7: the strategy's own user from its Secret, over the shared env's (env wins over envFrom), so its
    ACLs can be its own; a change of Secret rolls the pods."""
    own = _deployment(_spec(kafkaCredentialsSecret="alpha-kafka"))
    env = {entry["name"]: entry for entry in _container(own)["env"]}
    for key in ("username", "password"):
        assert env[f"TRADEBOT_KAFKA_SASL_{key.upper()}"]["valueFrom"] == {
            "secretKeyRef": {"name": "alpha-kafka", "key": key}
        }
    shared = _deployment(_spec())
    assert not [name for name in (e["name"] for e in _container(shared)["env"]) if "SASL" in name]
    hash_of = render.CONFIG_HASH_ANNOTATION
    assert own["metadata"]["annotations"][hash_of] != shared["metadata"]["annotations"][hash_of]
