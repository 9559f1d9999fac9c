"""`TradingStrategySpec`: the `TradingStrategy` resource's spec, the strategy parameters plus what runs them.

The CRD's schema is generated from these models (`tradebot.operator.crd`), so the API server and the operator
agree on every field. Rules that span fields are written twice: as pydantic validators (what the operator and
the tests enforce) and as CEL rules in the CRD (`cel_rules()`), so `kubectl apply` rejects an incoherent spec
before it is stored, with the same wording.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tradebot.core.costs import Costs
from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.models import Symbol
from tradebot.core.params import StrategyParams
from tradebot.core.shards import RANK_METRICS

FillModel = Literal["close", "next-open"]
# Five cron fields (minute hour day-of-month month day-of-week) or a @-macro, as a CronJob takes them; each
# field a list of `*`, `?`, a value or a range, each with an optional /step. The CRD carries the pattern;
# the value ranges (minute 0-59...) are checked by `_check_cron` (the operator's model) too.
_CRON_VALUE = r"([0-9]+|[A-Za-z]{3})"  # a number, or a month or weekday name (jan, mon)
_CRON_ITEM = rf"(\*|\?|{_CRON_VALUE}(-{_CRON_VALUE})?)(/[0-9]+)?"
_CRON_FIELD = rf"{_CRON_ITEM}(,{_CRON_ITEM})*"
CRON_PATTERN = (
    rf"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|{_CRON_FIELD}( +{_CRON_FIELD}){{4}})$"
)
_CRON_NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
# (name, lowest, highest) of each field; day-of-week 7 is Sunday too.
_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
# A Kubernetes quantity (resource.Quantity) without a sign: what requests and limits take.
QUANTITY_PATTERN = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)
_QUANTITY_SUFFIX = {
    **{
        suffix: Decimal(1024) ** power
        for power, suffix in enumerate(["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
    },
    **{suffix: Decimal(10) ** exponent for suffix, exponent in (("n", -9), ("u", -6), ("m", -3), ("k", 3))},
    **{
        suffix: Decimal(10) ** exponent
        for suffix, exponent in (("M", 6), ("G", 9), ("T", 12), ("P", 15), ("E", 18))
    },
}
RESOURCE_KEYS = ("limits", "requests", "claims")
MAX_RESOURCE_NAMES = 16
REPLICAS_MESSAGE = (
    "replicas must be 0 or 1: all pods of a strategy share one transactional id and would fence each other;"
    " to scale, split the symbols over several TradingStrategies (one per symbol set)"
)
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"

_QUANTITY_SCHEMA: dict[str, Any] = {
    "x-kubernetes-int-or-string": True,
    "pattern": QUANTITY_PATTERN,
    "maxLength": 64,
}
_RESOURCES_SCHEMA: dict[str, Any] = {
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "limits": {
            "type": "object",
            "description": "Most compute resources a container may use, e.g. cpu: 500m, memory: 512Mi.",
            "maxProperties": MAX_RESOURCE_NAMES,
            "additionalProperties": _QUANTITY_SCHEMA,
        },
        "requests": {
            "type": "object",
            "description": "Compute resources a container is scheduled with.",
            "maxProperties": MAX_RESOURCE_NAMES,
            "additionalProperties": _QUANTITY_SCHEMA,
        },
    },
}


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity as a number (`500m` -> 0.5, `1Gi` -> 1073741824); ValueError if it is none."""
    text = str(value).strip() if isinstance(value, (int, float, str)) and not isinstance(value, bool) else ""
    if not _QUANTITY.match(text):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)")
    number = re.match(r"^[0-9.]+([eE][-+]?[0-9.]+)?", text)
    assert number is not None
    digits, suffix = number.group(0), text[number.end() :]
    if suffix not in _QUANTITY_SUFFIX:  # `1e3`-style exponents are in `digits` already
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)")
    return Decimal(digits) * _QUANTITY_SUFFIX[suffix]


def check_resources(resources: dict[str, Any]) -> dict[str, Any]:
    """What the API server would refuse in a container's resources, refused here with a message naming the
    field: unknown keys, quantities that are none, and a request above its limit."""
    unknown = sorted(set(resources) - set(RESOURCE_KEYS))
    if unknown:
        raise ValueError(f"takes {', '.join(RESOURCE_KEYS)}, not {', '.join(unknown)}")
    parsed: dict[str, dict[str, Decimal]] = {}
    for key in ("limits", "requests"):
        section = resources.get(key) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{key} maps resource names to quantities")
        if len(section) > MAX_RESOURCE_NAMES:
            raise ValueError(f"{key} names at most {MAX_RESOURCE_NAMES} resources")
        try:
            parsed[key] = {name: parse_quantity(value) for name, value in section.items()}
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit:
            raise ValueError(
                f"requests.{name} ({resources['requests'][name]}) must not exceed "
                f"limits.{name} ({resources['limits'][name]})"
            )
    return resources


def check_cron(schedule: str) -> str:
    """The schedule's fields within their ranges (a CronJob refuses `61 * * * *` only when it is applied)."""
    if schedule.startswith("@"):
        return schedule
    for index, (field, (name, low, high)) in enumerate(zip(schedule.split(), _CRON_FIELDS, strict=True)):
        for item in field.split(","):
            body, _, step = item.partition("/")
            if step and int(step) < 1:
                raise ValueError(f"the {name} step must be at least 1, not {step}")
            if body in ("*", "?"):
                if body == "?" and index not in (2, 4):
                    raise ValueError(f"'?' is for day of month or day of week, not the {name}")
                continue
            for bound in body.split("-"):
                names = _CRON_NAMES.get(index, [])
                if bound.lower() in names:
                    continue
                if not bound.isdigit() or not low <= int(bound) <= high:
                    raise ValueError(f"{bound!r} is out of range for the {name} ({low}-{high})")
    return schedule


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, validate_default=True
    )


class ConfigMapKey(_Model):
    """A key of a ConfigMap in the resource's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN, description="ConfigMap name.")
    key: str = Field(
        min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN, description="Key holding the CSV."
    )


class Dataset(_Model):
    """Where the backtest's OHLCV CSV comes from: exactly one of configMap or path."""

    config_map: ConfigMapKey | None = Field(
        default=None, description="A ConfigMap key holding the CSV; mounted read-only into the backtest pod."
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=r"^/",
        description="Absolute path of a CSV inside the image.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Dataset:
        if (self.config_map is None) == (self.path is None):
            raise ValueError("dataset needs exactly one of configMap or path")
        return self


# The full table goes into one ConfigMap (at most 1 MiB): a row of the sweepable parameters and every metric
# is at most ~400 bytes of CSV, so 2000 combinations (valid or not) stay well inside it.
MAX_SWEEP_COMBINATIONS = 2000
# An Indexed Job's pods are named <job>-<index>-<suffix> with the hostname <job>-<index>, at most 63
# characters: the longest Job name (60) leaves two digits for the index.
MAX_SWEEP_SHARDS = 50
MAX_SWEEP_VALUES = 200
SWEEP_TOP = 10
_COUNT_SLACK = 1e-9  # as tradebot.backtest.sweep.parse_range: 0.3 / 0.1 counts 3 steps, not 2.99...


_RANGE_RULES: list[Any] = [
    {
        "rule": "has(self.values) ? !(has(self.from) || has(self.to) || has(self.step))"
        " : (has(self.from) && has(self.to) && has(self.step))",
        "message": "a sweep parameter needs from, to and step, or values (not both)",
    },
    {
        "rule": "!has(self.from) || !has(self.to) || self.from <= self.to",
        "message": "a sweep range's from must not exceed its to (an empty range)",
    },
]


class _SweepRange(_Model):
    """`from`, `to` and `step` (inclusive), or a list of `values`."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _RANGE_RULES})

    from_: float | None = Field(default=None, alias="from")
    to: float | None = None
    step: float | None = None
    values: Sequence[float] | None = None

    @model_validator(mode="after")
    def _a_range_or_values(self) -> _SweepRange:
        bounds = (self.from_, self.to, self.step)
        if (self.values is None) == (None in bounds):
            raise ValueError(_RANGE_RULES[0]["message"])
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError(_RANGE_RULES[1]["message"])
        return self

    def count(self) -> int:
        if self.values is not None:
            return len(self.values)
        assert self.from_ is not None
        assert self.to is not None
        assert self.step is not None
        return int((self.to - self.from_) / self.step + _COUNT_SLACK) + 1

    def cli(self) -> str:
        """The range as `tradebot sweep` takes it: START:STOP:STEP or a,b,c."""
        if self.values is not None:
            return ",".join(f"{value!r}" for value in self.values)
        return f"{self.from_!r}:{self.to!r}:{self.step!r}"


class WindowRange(_SweepRange):
    from_: int | None = Field(default=None, alias="from", ge=1, le=100_000, description="First window.")
    to: int | None = Field(default=None, ge=1, le=100_000, description="Last window (inclusive).")
    step: int | None = Field(default=None, ge=1, le=100_000, description="Between windows.")
    values: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SWEEP_VALUES,
        description="The windows, instead of a range.",
    )


class PercentRange(_SweepRange):
    from_: float | None = Field(default=None, alias="from", gt=0, le=10_000, description="First value.")
    to: float | None = Field(default=None, gt=0, le=10_000, description="Last value (inclusive).")
    step: float | None = Field(default=None, gt=0, le=10_000, description="Between values.")
    values: list[float] | None = Field(
        default=None, min_length=1, max_length=MAX_SWEEP_VALUES, description="The values, instead of a range."
    )


_SWEPT = ("shortWindow", "longWindow", "stopLossPct", "takeProfitPct", "trailingStopPct")


def _cel_count(field: str) -> str:
    """CEL: how many values `self.parameters.<field>` has (1 when it is not swept), as `count()` counts."""
    r = f"self.parameters.{field}"
    steps = f"int(double({r}.to - {r}.from) / double({r}.step) + {_COUNT_SLACK})"
    whole = f"has({r}.from) && has({r}.to) && has({r}.step)"
    return f"(!has({r}) ? 1 : has({r}.values) ? size({r}.values) : {whole} ? {steps} + 1 : 1)"


_PARAMETERS_RULE: dict[str, Any] = {
    "rule": " || ".join(f"has(self.{field})" for field in _SWEPT),
    "message": "sweep.parameters needs at least one parameter",
}
_GRID_RULE: dict[str, Any] = {
    "rule": " * ".join(_cel_count(field) for field in _SWEPT) + f" <= {MAX_SWEEP_COMBINATIONS}",
    "message": f"the sweep grid has more than {MAX_SWEEP_COMBINATIONS} combinations"
    " (its full table must fit in one ConfigMap)",
}


class SweepParameters(_Model):
    """The parameters to sweep; the others keep the spec's values."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_PARAMETERS_RULE]})

    short_window: WindowRange | None = Field(default=None, description="Short moving-average windows.")
    long_window: WindowRange | None = Field(default=None, description="Long moving-average windows.")
    stop_loss_pct: PercentRange | None = Field(default=None, description="Stop-loss percents.")
    take_profit_pct: PercentRange | None = Field(default=None, description="Take-profit percents.")
    trailing_stop_pct: PercentRange | None = Field(default=None, description="Trailing-stop percents.")

    def ranges(self) -> dict[str, _SweepRange]:
        """The swept fields (snake_case, as `tradebot sweep` names its columns) and their ranges."""
        return {name: value for name in type(self).model_fields if (value := getattr(self, name)) is not None}


class SweepSpec(_Model):
    """A parameter sweep run as one Indexed Job: each pod a slice of the grid, merged by the operator."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_GRID_RULE]})

    parameters: SweepParameters = Field(description="Ranges of the parameters to sweep.")
    metric: str = Field(
        default="sharpe",
        description="Rank combinations by this metric (higher wins).",
        json_schema_extra={"enum": list(RANK_METRICS)},
    )
    shards: int = Field(
        default=1, ge=1, le=MAX_SWEEP_SHARDS, description="Pods of the Indexed Job, each a slice of the grid."
    )
    top: int = Field(default=SWEEP_TOP, ge=1, le=SWEEP_TOP, description="Rows kept in status.sweep.top.")

    @field_validator("metric")
    @classmethod
    def _a_rank_metric(cls, metric: str) -> str:
        if metric not in RANK_METRICS:
            raise ValueError(f"metric must be one of {', '.join(RANK_METRICS)}")
        return metric

    @model_validator(mode="after")
    def _bounded_grid(self) -> SweepSpec:
        if not self.parameters.ranges():
            raise ValueError(_PARAMETERS_RULE["message"])
        if self.combinations() > MAX_SWEEP_COMBINATIONS:
            raise ValueError(f"{_GRID_RULE['message']}: {self.combinations()}")
        return self

    def combinations(self) -> int:
        total = 1
        for value in self.parameters.ranges().values():
            total *= value.count()
        return total


class BacktestSpec(_Model):
    """A backtest of the current parameters, run as a Job (or a CronJob when schedule is set)."""

    dataset: Dataset = Field(description="The OHLCV data to backtest on.")
    fill: FillModel = Field(
        default="close", description="Fill at the signal bar's close or the next bar's open."
    )
    commission_pct: float = Field(
        default=0.0, ge=0, le=10, description="Commission in percent of notional per fill (0.1 = 0.1%)."
    )
    slippage_bps: float = Field(
        default=0.0, ge=0, le=1000, description="Slippage in basis points, always against the trader."
    )
    initial_cash: float = Field(
        default=DEFAULT_INITIAL_CASH, gt=0, description="Starting cash, in account currency."
    )
    schedule: str | None = Field(
        default=None,
        max_length=128,
        pattern=CRON_PATTERN,
        description="Cron schedule; when set a CronJob re-runs the backtest, else one Job runs per spec change.",
    )

    sweep: SweepSpec | None = Field(
        default=None, description="Sweep parameter ranges over this dataset, as one Indexed Job."
    )

    def costs(self) -> Costs:
        return Costs(commission_pct=self.commission_pct, slippage_bps=self.slippage_bps)

    @field_validator("schedule")
    @classmethod
    def _schedule_in_range(cls, schedule: str | None) -> str | None:
        return None if schedule is None else check_cron(schedule)


class TradingStrategySpec(StrategyParams):
    """The desired state of one trading strategy: its parameters, where it trades, and its backtest."""

    symbols: list[Symbol] = Field(min_length=1, max_length=100, description="Symbols the strategy trades.")
    suspend: bool = Field(default=False, description="Scale the strategy to zero without deleting anything.")
    replicas: int = Field(
        default=1,
        ge=0,
        le=1,
        description=(
            "Strategy pods: 0 or 1. Every pod of a strategy uses its one transactional id, so a second would"
            " fence the first; to scale, split the symbols over several TradingStrategies."
        ),
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Container image; default: the operator's setting.",
    )
    resources: dict[str, Any] | None = Field(
        default=None,
        description="Kubernetes ResourceRequirements of the strategy and backtest containers (passed through).",
        json_schema_extra=_RESOURCES_SCHEMA,
    )
    backtest: BacktestSpec | None = Field(
        default=None, description="Backtest these parameters in the cluster."
    )
    kafka_credentials_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "Secret in the strategy's namespace with the keys `username` and `password`: the strategy's own"
            " Kafka SASL user (its ACLs from `tradebot kafka-acls strategy`), used instead of the shared one."
        ),
    )

    @field_validator("resources")
    @classmethod
    def _resources_the_api_server_takes(cls, resources: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if resources is None else check_resources(resources)

    def strategy_params(self) -> StrategyParams:
        """The plain parameters (what the strategy service and `tradebot backtest` take)."""
        return StrategyParams.model_validate(self.model_dump(include=set(StrategyParams.model_fields)))

    def costs(self) -> Costs:
        """The backtest's cost model (no costs without a backtest section)."""
        return self.backtest.costs() if self.backtest is not None else Costs()

    @staticmethod
    def cel_rules() -> list[dict[str, str]]:
        """`x-kubernetes-validations` for the spec: the cross-field rules a schema alone cannot say."""

        def opt(field: str, test: str) -> str:
            return f"!has(self.{field}) || {test}"

        return [
            {
                # Also a schema maximum; this rule carries the message that says how to scale instead.
                "rule": opt("replicas", "self.replicas <= 1"),
                "message": REPLICAS_MESSAGE,
                "fieldPath": ".replicas",
            },
            {
                "rule": "(has(self.shortWindow) ? self.shortWindow : 10) < (has(self.longWindow) ? self.longWindow : 30)",
                "message": "shortWindow must be less than longWindow",
                "reason": "FieldValueInvalid",
                "fieldPath": ".shortWindow",
            },
            {
                "rule": "has(self.symbols) && size(self.symbols) >= 1",
                "message": "symbols must list at least one symbol",
                "reason": "FieldValueRequired",
                "fieldPath": ".symbols",
            },
            {
                "rule": opt("stopLossPct", "(self.stopLossPct > 0.0 && self.stopLossPct < 100.0)"),
                "message": "stopLossPct is a percent: more than 0 and less than 100",
                "fieldPath": ".stopLossPct",
            },
            {
                "rule": opt(
                    "trailingStopPct", "(self.trailingStopPct > 0.0 && self.trailingStopPct < 100.0)"
                ),
                "message": "trailingStopPct is a percent: more than 0 and less than 100",
                "fieldPath": ".trailingStopPct",
            },
            {
                "rule": opt("takeProfitPct", "(self.takeProfitPct > 0.0 && self.takeProfitPct <= 10000.0)"),
                "message": "takeProfitPct is a percent: more than 0 and at most 10000",
                "fieldPath": ".takeProfitPct",
            },
            {
                "rule": opt(
                    "risk",
                    opt(
                        "risk.maxDailyLossPct",
                        "(self.risk.maxDailyLossPct > 0.0 && self.risk.maxDailyLossPct <= 100.0)",
                    ),
                ),
                "message": "risk.maxDailyLossPct is a percent: more than 0 and at most 100",
                "fieldPath": ".risk",
            },
            {
                "rule": opt(
                    "sizing",
                    "!(self.sizing.kind in ['equity-pct', 'risk-pct']) || !has(self.sizing.value)"
                    " || self.sizing.value <= 100.0",
                ),
                "message": "sizing equity-pct and risk-pct values are percents: at most 100",
                "fieldPath": ".sizing",
            },
            {
                "rule": opt("sizing", "self.sizing.kind != 'risk-pct' || has(self.stopLossPct)"),
                "message": "sizing risk-pct needs stopLossPct (the risk is the distance to the stop)",
                "fieldPath": ".sizing",
            },
            {
                "rule": opt("sizing", "(self.sizing.kind == 'all-in') != has(self.sizing.value)"),
                "message": "sizing needs a value unless its kind is all-in (and all-in takes none)",
                "fieldPath": ".sizing",
            },
            {
                "rule": opt(
                    "backtest", "has(self.backtest.dataset.configMap) != has(self.backtest.dataset.path)"
                ),
                "message": "backtest.dataset needs exactly one of configMap or path",
                "fieldPath": ".backtest",
            },
            {
                "rule": opt(
                    "backtest",
                    opt(
                        "backtest.commissionPct",
                        "(self.backtest.commissionPct >= 0.0 && self.backtest.commissionPct <= 10.0)",
                    ),
                ),
                "message": "backtest.commissionPct is a percent: from 0 to 10",
                "fieldPath": ".backtest",
            },
        ]


_SNAKE_WORD = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


def _camel_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item.startswith(("function-", "tagged-union")):
            continue
        else:
            parts.append(("." if parts else "") + to_camel(item))
    return "".join(parts)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad field in the resource's camelCase spelling, e.g.
    `spec.stopLossPct: Input should be less than 100 (got 150)`."""
    errors = exc.errors(include_url=False)
    if not errors:
        return "spec: invalid"
    first = errors[0]
    message = _SNAKE_WORD.sub(lambda match: to_camel(match.group(0)), str(first.get("msg", "invalid")))
    message = message.removeprefix("Value error, ")
    path = _camel_path(tuple(first.get("loc", ())))
    if not path:
        # A rule over several fields: name the first field the message mentions.
        mentioned = re.search(
            r"\b(" + "|".join(to_camel(name) for name in TradingStrategySpec.model_fields) + r")\b", message
        )
        path = mentioned.group(1) if mentioned else ""
    where = f"spec.{path}" if path else "spec"
    text = f"{where}: {message}"
    given = first.get("input")
    if path and isinstance(given, (int, float, str)) and first.get("type") != "missing":
        text += f" (got {given!r})"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return " ".join(text.split())
