"""`tradebot backtest`: one backtest of the crossover strategy over a CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tradebot.backtest.cliargs import UsageError, add_data_arguments, add_strategy_arguments, build_config


def build_parser(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_strategy_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object: stats, trades, params")
    out.add_argument("--plot", metavar="DIR", help="write price/trades and equity/drawdown PNGs into DIR")
    out.add_argument(
        "--result-file",
        metavar="FILE",
        help="also write the stats (no trades) as compact JSON to FILE (e.g. /dev/termination-log in a Job)",
    )
    out.add_argument("--engine", choices=("kernel", "reference"), default="kernel", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from tradebot.backtest.data import DataError, load_ohlcv

    try:
        config = build_config(args)
        bars = load_ohlcv(args.data)
    except (UsageError, DataError, OSError) as exc:
        print(f"tradebot backtest: error: {exc}", file=sys.stderr)
        return 2
    if len(bars) < 2:
        print(
            f"tradebot backtest: error: {args.data} holds {len(bars)} bar(s); a backtest needs at least 2",
            file=sys.stderr,
        )
        return 2

    from tradebot.backtest import report
    from tradebot.backtest.result import run_backtest

    result = run_backtest(bars, config, engine=args.engine)
    params = result.params_dict()
    if args.json:
        print(report.result_to_json(result.stats, result.trades, params))
    else:
        report.print_report(result.stats, result.trades)
    if args.result_file:
        Path(args.result_file).write_text(
            report.result_to_json(result.stats, result.trades.iloc[0:0], {}) + "\n"
        )
    if args.plot:
        folder = Path(args.plot)
        written = [
            report.plot_price_with_trades(
                folder / "price_trades.png",
                result.raw.index,
                result.close,
                result.raw.short_ma,
                result.raw.long_ma,
                result.trades,
            ),
            report.plot_equity_drawdown(
                folder / "equity_drawdown.png",
                result.raw.index,
                result.raw.equity,
                result.close / result.close[0] * config.initial_cash,
            ),
        ]
        if not args.json:
            for path in written:
                print(f"wrote {path}")
    return 0
