"""The strategy and cost flags shared by `tradebot backtest` and `tradebot sweep`, and their
translation into `StrategyParams` / `Costs` with errors that name the flag.

Parsing the flags imports nothing heavy (pydantic, pandas and the engine load in `build_config`), so
`tradebot backtest` can start reading its file while they load.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from tradebot.core.defaults import DEFAULT_INITIAL_CASH
from tradebot.core.errors import TradebotError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from tradebot.backtest.engine import BacktestConfig

# The engine's FILL_MODELS, spelled out so that parsing flags does not import the engine (and pandas);
# tests/backtest/test_cli.py checks that the two agree.
FILL_CHOICES: tuple[str, ...] = ("close", "next-open")
# What each fill mode does, for `--help` (tests/backtest/test_cli.py checks every engine mode has its
# text). As `engine.run_reference`, `engine.run_ticks` and `core.risk.stop_exit` do it.
FILL_HELP: dict[str, str] = {
    "close": (
        "each decision (entry, cross exit) fills at the close of the bar that made it. Stops and"
        " take-profits: on a bar --timeframe (1s ... 1d, and auto on bar data) each bar's open, high and"
        " low are checked before its close, so a long's stop fills at the stop level when the bar's low"
        " reaches it (a short's when the high does) and a take-profit at its level; with --timeframe tick"
        " each row is one price (its close), so a stop fills at the first close at or beyond it; tick data"
        " (no OHLC) on a bar timeframe checks stops at every tick and fills at that tick's price."
    ),
    "next-open": (
        "a decision at a bar's close fills at the next bar's open (none on the last bar); stops and"
        " take-profits always watch each bar's open, high and low as above, whatever the timeframe."
        " Not for tick data on a bar timeframe."
    ),
}
FILL_HELP_COMMON = (
    "In every mode a bar that opens beyond a stop or target (a gap) fills at its open, a bar that reaches"
    " both the stop and the take-profit exits by --exit-rule, every fill price moves by --slippage-bps"
    " against the order, and a position still open at the end closes at the last close."
)
TIMEFRAME_HELP = (
    "auto (the default): bar data (OHLC columns) trades on bars of its own interval (the most common step"
    " between timestamps, e.g. 1d for daily bars with weekends), so stops see each bar's range; an"
    " interval that is no timeframe (e.g. 10 minutes) falls back to tick with a warning; tick data trades"
    " as tick. 1s ... 1d: bars of TF (finer data is aggregated). tick: each row as it is, one price (its"
    " close)"
)
# Likewise core.bars.TIMEFRAMES and core.params.EXIT_RULES (core.bars imports numpy).
TIMEFRAME_CHOICES: tuple[str, ...] = (
    "tick", "1s", "5s", "15s", "30s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"
)  # fmt: skip
EXIT_RULE_CHOICES: tuple[str, ...] = ("stop-first", "target-first", "open-nearest")
# Resolved against the data by `data.resolve_timeframe` (which spells it `data.AUTO`).
AUTO_TIMEFRAME = "auto"

# StrategyParams field (dotted for nested) -> flag; used for flags and for naming errors.
PARAM_FLAGS: dict[str, str] = {
    "ma_type": "--ma",
    "short_window": "--short-window",
    "long_window": "--long-window",
    "stop_loss_pct": "--stop-loss-pct",
    "take_profit_pct": "--take-profit-pct",
    "trailing_stop_pct": "--trailing-stop-pct",
    "allow_short": "--allow-short",
    "timeframe": "--timeframe",
    "exit_rule": "--exit-rule",
    "sizing": "--sizing",
    "qty_step": "--qty-step",
    "risk.max_position_qty": "--max-position-qty",
    "risk.max_position_notional": "--max-position-notional",
    "risk.max_gross_exposure": "--max-gross-exposure",
    "risk.max_daily_loss_pct": "--max-daily-loss-pct",
    "risk.cooldown_bars": "--cooldown-bars",
}
COST_FLAGS = {
    "commission_pct": "--commission-pct",
    "commission_fixed": "--commission-fixed",
    "slippage_bps": "--slippage-bps",
}
# Flags a sweep may give as ranges, with the type of one value.
RANGE_FLAGS: dict[str, type[int] | type[float]] = {
    "short_window": int,
    "long_window": int,
    "stop_loss_pct": float,
    "take_profit_pct": float,
    "trailing_stop_pct": float,
    "risk.cooldown_bars": int,
    "risk.max_daily_loss_pct": float,
}


class UsageError(TradebotError):
    """A bad flag or file: the CLI prints it as one line and exits 2."""


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="bars or ticks, CSV or Parquet (generic OHLCV, Yahoo, Binance klines, timestamp,price[,size])",
    )


def add_strategy_arguments(parser: argparse.ArgumentParser, *, ranges: bool = False) -> None:
    group = parser.add_argument_group("strategy")
    kind: Any = str if ranges else int
    real: Any = str if ranges else float
    range_note = " (a range START:STOP:STEP or a list a,b,c)" if ranges else ""
    group.add_argument(
        "--short-window", type=kind, required=True, metavar="N", help="short MA window" + range_note
    )
    group.add_argument(
        "--long-window", type=kind, required=True, metavar="M", help="long MA window" + range_note
    )
    group.add_argument(
        "--ma", dest="ma_type", choices=("sma", "ema"), default="sma", help="moving average type"
    )
    group.add_argument(
        "--stop-loss-pct", type=real, metavar="P", help="stop-loss, percent from entry" + range_note
    )
    group.add_argument(
        "--take-profit-pct", type=real, metavar="P", help="take-profit, percent from entry" + range_note
    )
    group.add_argument(
        "--trailing-stop-pct",
        type=real,
        metavar="P",
        help="trailing stop, percent from the best price" + range_note,
    )
    group.add_argument("--allow-short", action="store_true", help="sell short on downward crosses")
    group.add_argument(
        "--timeframe",
        choices=(AUTO_TIMEFRAME, *TIMEFRAME_CHOICES),
        default=AUTO_TIMEFRAME,
        metavar="TF",
        help=TIMEFRAME_HELP,
    )
    group.add_argument(
        "--exit-rule",
        choices=EXIT_RULE_CHOICES,
        default="stop-first",
        help="which exit fills when one bar reaches both the stop and the take-profit",
    )
    group.add_argument(
        "--sizing",
        default="all-in",
        metavar="SPEC",
        help="all-in | qty:Q | notional:N | equity-pct:F | risk-pct:R",
    )
    group.add_argument(
        "--qty-step",
        type=float,
        default=1.0,
        metavar="S",
        help="round quantities down to a multiple of S (0 = fractional)",
    )
    risk = parser.add_argument_group("risk limits")
    risk.add_argument("--max-position-qty", type=float, metavar="Q")
    risk.add_argument("--max-position-notional", type=float, metavar="N")
    risk.add_argument(
        "--max-gross-exposure",
        type=float,
        default=1.0,
        metavar="X",
        help="gross exposure / equity (1 = no leverage)",
    )
    risk.add_argument(
        "--max-daily-loss-pct", type=real, metavar="P", help="no new entries for the UTC day after this loss"
    )
    risk.add_argument(
        "--cooldown-bars", type=kind, default=0, metavar="N", help="bars without entries after a stop-out"
    )
    costs = parser.add_argument_group("fills and costs")
    costs.add_argument(
        "--fill",
        choices=FILL_CHOICES,
        default="close",
        help=" ".join([*(f"{mode}: {text}" for mode, text in FILL_HELP.items()), FILL_HELP_COMMON]),
    )
    costs.add_argument(
        "--commission-pct", type=float, default=0.0, metavar="C", help="percent of notional per fill"
    )
    costs.add_argument("--commission-fixed", type=float, default=0.0, metavar="F", help="fixed fee per fill")
    costs.add_argument("--slippage-bps", type=float, default=0.0, metavar="B")
    costs.add_argument("--initial-cash", type=float, default=DEFAULT_INITIAL_CASH, metavar="X")


def _dest(field: str) -> str:
    return field.rsplit(".", 1)[-1]


def params_data(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"risk": {}}
    for field in PARAM_FLAGS:
        value = (overrides or {}).get(field, getattr(args, _dest(field)))
        if value is None:
            continue
        head, _, tail = field.partition(".")
        if tail:
            data[head][tail] = value
        else:
            data[head] = value
    return data


def build_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> BacktestConfig:
    from pydantic import ValidationError

    from tradebot.backtest.engine import BacktestConfig
    from tradebot.core.costs import Costs
    from tradebot.core.params import StrategyParams

    data = params_data(args, overrides)
    if data.get("timeframe") == AUTO_TIMEFRAME:
        raise ValueError("resolve --timeframe auto against the data first (data.resolve_timeframe)")
    try:
        params = StrategyParams.model_validate(data)
    except ValidationError as exc:
        raise UsageError(describe(exc, PARAM_FLAGS)) from None
    try:
        costs = Costs(
            commission_pct=args.commission_pct,
            commission_fixed=args.commission_fixed,
            slippage_bps=args.slippage_bps,
        )
    except ValidationError as exc:
        raise UsageError(describe(exc, COST_FLAGS)) from None
    if not args.initial_cash > 0:
        raise UsageError(f"--initial-cash must be > 0, got {args.initial_cash}")
    return BacktestConfig(params=params, costs=costs, initial_cash=args.initial_cash, fill=args.fill)


def describe(exc: ValidationError, flags: dict[str, str]) -> str:
    """The first validation error as one line naming the flag."""
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    flag = flags.get(loc)
    if flag is None:
        # Model-level errors (short >= long) have no location: name the flags the message mentions.
        for field, candidate in flags.items():
            message = message.replace(_dest(field), candidate)
        return message
    return f"{flag}: {message}"
