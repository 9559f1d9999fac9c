"""The `TradingStrategy` CRD, generated from the pydantic models so the schema never drifts from the code.

`python -m tradebot.operator.crd > manifests/crds/tradingstrategies.tradebot.dev.yaml` regenerates it; a test
checks that the committed file (and the chart's copy) equal the generated one.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from tradebot.operator import render
from tradebot.operator.spec import TradingStrategySpec

# Keywords a structural OpenAPI v3 schema in a CRD understands; pydantic's others (title, $defs...) are dropped.
_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxProperties",
    "maxItems",
    "uniqueItems",
    "items",
    "properties",
    "required",
    "additionalProperties",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        target = dict(defs[schema["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return schema


def to_structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """pydantic JSON Schema -> Kubernetes structural schema (refs inlined, Optional as nullable)."""
    schema = _resolve(schema, defs)
    if "anyOf" in schema or "oneOf" in schema:
        options = [_resolve(option, defs) for option in schema.get("anyOf", schema.get("oneOf", []))]
        non_null = [option for option in options if option.get("type") != "null"]
        if len(non_null) == 1:
            outer = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            merged = {**non_null[0], **outer}
            inner = to_structural(merged, defs)
            if len(non_null) != len(options):
                inner["nullable"] = True
            if inner.get("default", 0) is None:
                del inner["default"]
            return inner
        raise ValueError(f"cannot express a union of {len(non_null)} types in a structural schema: {schema}")
    if "const" in schema:
        schema = {**{k: v for k, v in schema.items() if k != "const"}, "enum": [schema["const"]]}
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in _KEEP:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020-12 (pydantic) gives the bound; OpenAPI v3.0 (Kubernetes) a flag beside it.
            result["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            result[key] = True
            continue
        if key == "properties":
            result[key] = {name: to_structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            result[key] = to_structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                result[key] = to_structural(value, defs)
            # `additionalProperties: false` is implied by a structural schema (unknown fields are pruned).
        else:
            result[key] = value
    if "type" not in result and not (
        result.get("x-kubernetes-preserve-unknown-fields") or result.get("x-kubernetes-int-or-string")
    ):
        result["x-kubernetes-preserve-unknown-fields"] = True
        result["type"] = "object"
    return result


def spec_schema() -> dict[str, Any]:
    raw = TradingStrategySpec.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = to_structural(raw, defs)
    schema["x-kubernetes-validations"] = TradingStrategySpec.cel_rules()
    return schema


def status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status", "reason", "lastTransitionTime"],
        "properties": {
            "type": {"type": "string", "description": "Ready or BacktestSucceeded."},
            "status": {
                "type": "string",
                "enum": ["True", "False", "Unknown"],
                "description": "True, False or Unknown.",
            },
            "reason": {"type": "string", "description": "One CamelCase word for machines."},
            "message": {"type": "string", "description": "What happened, for humans."},
            "lastTransitionTime": {
                "type": "string",
                "format": "date-time",
                "description": "When the status last flipped.",
            },
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "The spec generation the condition speaks for.",
            },
        },
    }
    number = {"type": "number"}
    sweep_row = {
        "type": "object",
        "properties": {
            "params": {
                "type": "object",
                "description": "The swept parameters, by their spec names.",
                "additionalProperties": number,
            },
            "metrics": {
                "type": "object",
                "description": "Its metrics (camelCase; null where undefined, e.g. no trades).",
                "additionalProperties": {**number, "nullable": True},
            },
        },
    }
    return {
        "type": "object",
        "description": "Observed state, written by the operator only.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The spec generation the status speaks for.",
            },
            "conditions": {
                "type": "array",
                "description": "Ready follows the strategy Deployment; BacktestSucceeded the current backtest.",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "backtest": {
                "type": "object",
                "description": "Key metrics of the last completed backtest of the current spec.",
                "properties": {
                    "jobName": {"type": "string", "description": "The Job that ran the backtest."},
                    "hash": {"type": "string", "description": "Hash of the spec the backtest ran."},
                    "finishedAt": {
                        "type": "string",
                        "format": "date-time",
                        "description": "When it finished.",
                    },
                    "totalReturnPct": {**number, "description": "Total return, in percent."},
                    "sharpe": {**number, "nullable": True, "description": "Annualised Sharpe ratio."},
                    "maxDrawdownPct": {**number, "description": "Largest peak-to-trough loss, in percent."},
                    "winRatePct": {**number, "nullable": True, "description": "Winning trades, in percent."},
                    "nTrades": {"type": "integer", "description": "Closed trades."},
                    "buyHoldReturnPct": {**number, "description": "Buy-and-hold return over the same data."},
                    "equityFinal": {**number, "description": "Equity at the end, in account currency."},
                },
            },
            "sweep": {
                "type": "object",
                "description": "The merged result of the current spec's sweep (the full table is in a ConfigMap).",
                "properties": {
                    "jobName": {"type": "string", "description": "The Indexed Job that ran it."},
                    "hash": {"type": "string", "description": "Hash of the spec the sweep ran."},
                    "metric": {"type": "string", "description": "What the combinations are ranked by."},
                    "shards": {"type": "integer", "description": "Pods, each a slice of the grid."},
                    "combinations": {"type": "integer", "description": "Valid combinations run."},
                    "invalid": {"type": "integer", "description": "Combinations skipped (short >= long)."},
                    "completedAt": {
                        "type": "string",
                        "format": "date-time",
                        "description": "When the last shard finished.",
                    },
                    "configMap": {
                        "type": "string",
                        "description": "The ConfigMap with the full table (CSV).",
                    },
                    "best": {**sweep_row, "description": "The best combination."},
                    "top": {
                        "type": "array",
                        "description": "The best combinations, ranked.",
                        "items": sweep_row,
                    },
                },
            },
        },
    }


def name_rules() -> list[dict[str, str]]:
    """Rules on `metadata.name`, which is the strategy id (a label value, a Kafka and Redis key) and the stem
    of every object the operator derives: names the services would refuse, or that would make an invalid
    label or Job name, are refused at `kubectl apply`, each with what to do."""
    return [
        {
            "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "message": "metadata.name must be lower-case letters, digits and dashes, starting and ending with a "
            "letter or digit (no dots): it is the strategy id and a label value",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": f"size(self.metadata.name) <= {render.MAX_NAME_LENGTH}",
            "message": f"metadata.name must be at most {render.MAX_NAME_LENGTH} characters: the backtest CronJob "
            "<name>-backtest must fit in 52 and its Jobs in 63",
            "reason": "FieldValueInvalid",
        },
    ]


def build_crd() -> dict[str, Any]:
    columns = [
        {"name": "Symbols", "type": "string", "jsonPath": ".spec.symbols"},
        {"name": "Short", "type": "integer", "jsonPath": ".spec.shortWindow"},
        {"name": "Long", "type": "integer", "jsonPath": ".spec.longWindow"},
        {"name": "Stop", "type": "number", "jsonPath": ".spec.stopLossPct"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Return", "type": "number", "jsonPath": ".status.backtest.totalReturnPct"},
        {"name": "Sharpe", "type": "number", "jsonPath": ".status.backtest.sharpe"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{render.PLURAL}.{render.GROUP}",
            "labels": {"app.kubernetes.io/name": "tradebot", "app.kubernetes.io/part-of": "tradebot"},
        },
        "spec": {
            "group": render.GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": render.PLURAL,
                "singular": "tradingstrategy",
                "kind": render.KIND,
                "listKind": f"{render.KIND}List",
                "shortNames": ["ts"],
                "categories": ["tradebot"],
            },
            "versions": [
                {
                    "name": render.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A trading strategy run live by the strategy service and backtested by Jobs.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "x-kubernetes-validations": name_rules(),
                        }
                    },
                }
            ],
        },
    }


def render_yaml() -> str:
    header = (
        "# Generated by `python -m tradebot.operator.crd` from the pydantic models: do not edit by hand.\n"
    )
    # Through JSON: a copy with no shared objects, so YAML writes no anchors (a rule list reused by models).
    return header + yaml.safe_dump(json.loads(json.dumps(build_crd())), sort_keys=False, width=110)


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
