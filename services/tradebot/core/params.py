"""`StrategyParams`: the one parameter model shared by the CLI, the services, the backtester and the
`TradingStrategy` resource (whose CRD schema is generated from it).

Percentages are percent: `stop_loss_pct=2` means 2%. Field aliases are camelCase for Kubernetes;
Python code and environment JSON may use either spelling.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from tradebot.core.bars import TICK, Timeframe

SizingKind = Literal["all-in", "qty", "notional", "equity-pct", "risk-pct"]
SIZING_KINDS: tuple[str, ...] = ("all-in", "qty", "notional", "equity-pct", "risk-pct")
# Which exit fills when one bar reaches both the stop and the take-profit (the bar's path is unknown).
ExitRule = Literal["stop-first", "target-first", "open-nearest"]
EXIT_RULES: tuple[str, ...] = ("stop-first", "target-first", "open-nearest")


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, validate_default=True
    )


class Sizing(_Model):
    """How big an entry is. `all-in` uses all available cash; `qty` a fixed quantity; `notional` a fixed
    amount of currency; `equity-pct` a percent of equity; `risk-pct` risks that percent of equity
    between the entry and the stop-loss."""

    kind: SizingKind = Field(default="all-in", description="all-in | qty | notional | equity-pct | risk-pct")
    value: float | None = Field(
        default=None,
        gt=0,
        description="Quantity, currency amount or percent; required unless kind is all-in.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return parse_sizing_text(data)
        return data

    @model_validator(mode="after")
    def _value_matches_kind(self) -> Sizing:
        if self.kind == "all-in" and self.value is not None:
            raise ValueError("sizing all-in takes no value")
        if self.kind != "all-in" and self.value is None:
            raise ValueError(f"sizing {self.kind} needs a value, e.g. {self.kind}:10")
        if self.kind in ("equity-pct", "risk-pct") and self.value is not None and self.value > 100:
            raise ValueError(f"sizing {self.kind} is a percent: at most 100")
        return self

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"


def parse_sizing_text(text: str) -> dict[str, Any]:
    """`all-in`, `qty:Q`, `notional:N`, `equity-pct:F` or `risk-pct:R`."""
    kind, sep, raw = text.strip().partition(":")
    if kind not in SIZING_KINDS:
        raise ValueError(
            f"unknown sizing {kind!r}: use one of all-in, qty:Q, notional:N, equity-pct:F, risk-pct:R"
        )
    if not sep:
        return {"kind": kind}
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"sizing {kind} needs a number after ':', got {raw!r}") from None
    return {"kind": kind, "value": value}


class RiskLimits(_Model):
    max_position_qty: float | None = Field(
        default=None, gt=0, description="Largest position per symbol, in units."
    )
    max_position_notional: float | None = Field(
        default=None, gt=0, description="Largest position per symbol, in currency at entry."
    )
    max_gross_exposure: float = Field(
        default=1.0, gt=0, le=10, description="Largest sum of |position value| over equity (1 = no leverage)."
    )
    max_daily_loss_pct: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="No new entries for the rest of the UTC day once equity is this percent below the day's start.",
    )
    cooldown_bars: int = Field(
        default=0, ge=0, le=100_000, description="Bars (or ticks) without new entries after a stop-out."
    )


# The longest moving-average window. A live strategy's state per symbol holds both windows' prices (about 22
# bytes each in JSON) and goes out as one Kafka record: 2 x 10,000 prices and 100 orders in flight stay
# well under Kafka's default 1 MB record limit.
MAX_WINDOW = 10_000


class StrategyParams(_Model):
    """Moving-average crossover with stops, sizing and risk limits."""

    ma_type: Literal["sma", "ema"] = Field(default="sma", description="Moving average: sma or ema.")
    short_window: int = Field(
        default=10, ge=1, le=MAX_WINDOW - 1, description="Short moving-average window, in bars."
    )
    long_window: int = Field(
        default=30, ge=2, le=MAX_WINDOW, description="Long moving-average window; > shortWindow."
    )
    stop_loss_pct: float | None = Field(
        default=None, gt=0, lt=100, description="Stop-loss distance from the entry price, in percent."
    )
    take_profit_pct: float | None = Field(
        default=None, gt=0, le=10_000, description="Take-profit distance from the entry price, in percent."
    )
    trailing_stop_pct: float | None = Field(
        default=None,
        gt=0,
        lt=100,
        description="Trailing-stop distance from the best price since entry, in percent.",
    )
    allow_short: bool = Field(default=False, description="Also sell short on a downward cross.")
    timeframe: Timeframe = Field(
        default=TICK,
        description=(
            "Bars the strategy trades on: tick (every trade is a bar) or 1s to 1d bars, labelled by their"
            " open time and aligned to the UTC epoch."
        ),
    )
    exit_rule: ExitRule = Field(
        default="stop-first",
        description=(
            "Which exit fills when one bar reaches both the stop and the take-profit: stop-first,"
            " target-first, or open-nearest (the level nearer the bar's open)."
        ),
    )
    sizing: Sizing = Field(default_factory=Sizing, description="Entry size.")
    qty_step: float = Field(
        default=1.0, ge=0, description="Quantities are rounded down to a multiple of this (0 = fractional)."
    )
    risk: RiskLimits = Field(default_factory=RiskLimits, description="Risk limits applied before any order.")

    @model_validator(mode="after")
    def _coherent(self) -> StrategyParams:
        if self.short_window >= self.long_window:
            raise ValueError(
                f"short_window ({self.short_window}) must be less than long_window ({self.long_window})"
            )
        if self.sizing.kind == "risk-pct" and self.stop_loss_pct is None:
            raise ValueError("sizing risk-pct needs stop_loss_pct (the risk is the distance to the stop)")
        return self

    def to_cli_args(self) -> list[str]:
        """The `tradebot backtest` flags that reproduce these parameters."""
        args = [
            f"--ma={self.ma_type}",
            f"--short-window={self.short_window}",
            f"--long-window={self.long_window}",
            f"--sizing={self.sizing}",
            f"--qty-step={self.qty_step:g}",
        ]
        for flag, value in (
            ("--stop-loss-pct", self.stop_loss_pct),
            ("--take-profit-pct", self.take_profit_pct),
            ("--trailing-stop-pct", self.trailing_stop_pct),
            ("--max-position-qty", self.risk.max_position_qty),
            ("--max-position-notional", self.risk.max_position_notional),
            ("--max-daily-loss-pct", self.risk.max_daily_loss_pct),
        ):
            if value is not None:
                args.append(f"{flag}={value:g}")
        if self.risk.max_gross_exposure != 1.0:
            args.append(f"--max-gross-exposure={self.risk.max_gross_exposure:g}")
        if self.risk.cooldown_bars:
            args.append(f"--cooldown-bars={self.risk.cooldown_bars}")
        if self.allow_short:
            args.append("--allow-short")
        # Always named, tick too: the CLI's default (auto) follows the data, these parameters do not.
        args.append(f"--timeframe={self.timeframe}")
        if self.exit_rule != "stop-first":
            args.append(f"--exit-rule={self.exit_rule}")
        return args

    def to_env_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
