"""`tradebot sweep`: the backtest over a grid of parameters (ranges for any numeric flag), ranked,
in parallel on every core, optionally walk-forward."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradebot.backtest.cliargs import (
    AUTO_TIMEFRAME,
    RANGE_FLAGS,
    UsageError,
    add_data_arguments,
    add_strategy_arguments,
    build_config,
)

if TYPE_CHECKING:
    from tradebot.backtest.data import ResolvedTimeframe


def build_parser(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_strategy_arguments(parser, ranges=True)
    from tradebot.backtest.sweep import RANK_METRICS

    out = parser.add_argument_group("sweep")
    out.add_argument(
        "--metric", choices=RANK_METRICS, default="sharpe", help="rank combinations by this metric"
    )
    out.add_argument(
        "--top", type=int, default=20, metavar="K", help="rows to show (all are in --json and --csv)"
    )
    out.add_argument("--jobs", type=int, default=0, metavar="J", help="threads (0 = every core)")
    out.add_argument(
        "--walk-forward", type=int, default=0, metavar="FOLDS", help="walk-forward with this many folds"
    )
    out.add_argument(
        "--train-ratio", type=float, default=3.0, metavar="R", help="training window / test window"
    )
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--csv", metavar="FILE", help="write the full ranked table as CSV")
    out.add_argument("--plot", metavar="DIR", help="write a heatmap of --metric over short x long windows")
    out.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    shards = parser.add_argument_group("shards (one slice of the grid, e.g. a pod of an Indexed Job)")
    shards.add_argument(
        "--shard-count",
        type=int,
        default=0,
        metavar="N",
        help="the grid is cut into N slices: k goes to k %% N",
    )
    shards.add_argument(
        "--shard-index",
        type=int,
        default=None,
        metavar="I",
        help="the slice to run (default: $JOB_COMPLETION_INDEX, which an Indexed Job sets)",
    )
    shards.add_argument(
        "--result-file",
        metavar="FILE",
        help="with --shard-count: write the slice's --top best rows there, compact (a termination message)",
    )
    shards.add_argument(
        "--jsonl", action="store_true", help="with --shard-count: print the slice's rows as JSON lines"
    )


def _grid(args: argparse.Namespace) -> dict[str, list[Any]]:
    from tradebot.backtest.sweep import parse_range

    grid: dict[str, list[Any]] = {}
    for field, kind in RANGE_FLAGS.items():
        raw = getattr(args, field.rsplit(".", 1)[-1])
        if raw is None or (field == "risk.cooldown_bars" and raw == 0):
            continue
        flag = "--" + field.rsplit(".", 1)[-1].replace("_", "-")
        try:
            values = parse_range(str(raw), kind)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
        if not values:
            raise UsageError(f"{flag}: the range is empty")
        grid[field] = values
    return grid


def _shard(args: argparse.Namespace) -> tuple[int, int] | None:
    if not args.shard_count:
        return None
    index = args.shard_index
    if index is None:
        raw = os.environ.get("JOB_COMPLETION_INDEX", "")
        if not raw.isdigit():
            raise UsageError("--shard-count needs --shard-index or $JOB_COMPLETION_INDEX")
        index = int(raw)
    if args.shard_count < 1 or not 0 <= index < args.shard_count:
        raise UsageError(f"--shard-index must be in 0..{args.shard_count - 1}, not {index}")
    if args.walk_forward:
        raise UsageError("--walk-forward cannot be sharded")
    return index, args.shard_count


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tradebot.backtest.data import DataError, at_timeframe, load_market_data, resolve_timeframe
    from tradebot.backtest.sweep import run_sweep, walk_forward

    try:
        grid = _grid(args)
        shard = _shard(args)
        first = {field: values[0] for field, values in grid.items()}
        fixed = {**first, "short_window": 1, "long_window": 2}
        # The base config validates every fixed flag (`auto` stands in as tick until the data is read);
        # per-combination validity is checked in the sweep.
        build_config(args, {**fixed, "timeframe": "tick"} if args.timeframe == AUTO_TIMEFRAME else fixed)
        data = load_market_data(args.data)
        # The same resolution as `tradebot backtest`, so a sweep's rows are its single runs.
        timeframe = resolve_timeframe(data, args.timeframe)
        base = build_config(args, {**fixed, "timeframe": timeframe.timeframe})
        bars = at_timeframe(data, base.params.timeframe, args.data).frame()
    except (UsageError, DataError, OSError) as exc:
        print(f"tradebot sweep: error: {exc}", file=sys.stderr)
        return 2
    if timeframe.warning is not None:
        print(f"tradebot sweep: warning: {timeframe.warning}", file=sys.stderr)
    console = Console(stderr=True)
    jobs = args.jobs or None
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=args.no_progress or (args.json and not console.is_terminal),
        transient=True,
    ) as progress:
        if args.walk_forward:
            task = progress.add_task("walk-forward folds", total=args.walk_forward)
            try:
                table = walk_forward(
                    bars,
                    base,
                    grid,
                    folds=args.walk_forward,
                    train_ratio=args.train_ratio,
                    metric=args.metric,
                    jobs=jobs,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
            except ValueError as exc:
                print(f"tradebot sweep: error: {exc}", file=sys.stderr)
                return 2
            return _emit_walk_forward(args, table, timeframe)
        task = progress.add_task("combinations", total=None)
        try:
            result = run_sweep(
                bars,
                base,
                grid,
                metric=args.metric,
                jobs=jobs,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
                shard=shard,
            )
        except ValueError as exc:
            print(f"tradebot sweep: error: {exc}", file=sys.stderr)
            return 2
    if shard is not None:
        return _emit_shard(args, shard, result)
    if not len(result.table):
        print(
            "tradebot sweep: error: no valid combination (is every short window below every long window?)",
            file=sys.stderr,
        )
        return 2
    if args.csv:
        result.table.to_csv(args.csv, index=False)
    if args.plot and {"short_window", "long_window"} <= set(grid):
        from tradebot.backtest.report import plot_sweep_heatmap

        path = plot_sweep_heatmap(
            Path(args.plot) / f"sweep_{args.metric}.png",
            result.table,
            "short_window",
            "long_window",
            args.metric,
        )
        if not args.json:
            print(f"wrote {path}")
    if args.json:
        print(
            json.dumps(
                {
                    "metric": args.metric,
                    "timeframe": timeframe.timeframe,
                    "timeframe_why": timeframe.why,
                    "combinations": len(result.table),
                    "invalid": result.invalid,
                    "bars": result.bars,
                    "results": json.loads(result.table.to_json(orient="records")),
                }
            )
        )
        return 0
    from rich.table import Table

    from tradebot.backtest.report import format_cell, print_table

    out = Console()
    ranked = Table(
        title=f"{len(result.table):,} combinations over {result.bars:,} bars (timeframe {timeframe.label()}),"
        f" ranked by {args.metric}"
    )
    shown = result.table.head(args.top)
    for column in shown.columns:
        ranked.add_column(str(column), justify="right")
    for row in shown.itertuples(index=False):
        ranked.add_row(
            *(format_cell(str(column), value) for column, value in zip(shown.columns, row, strict=True))
        )
    print_table(out, ranked)
    if result.invalid:
        out.print(f"skipped {result.invalid} invalid combinations (short window >= long window and the like)")
    return 0


def _emit_shard(args: argparse.Namespace, shard: tuple[int, int], result: Any) -> int:
    """A slice of the grid (an empty one is no error: more shards than combinations)."""
    from tradebot.core.shards import ShardResult, encode_shard_result, table_lines

    rows = result.table.to_dict(orient="records")
    if args.result_file:
        report = ShardResult(
            metric=args.metric,
            shard=shard[0],
            shards=shard[1],
            combinations=len(rows),
            invalid=result.invalid,
            top=rows[: max(0, args.top)],
        )
        Path(args.result_file).write_text(encode_shard_result(report))
    if args.jsonl:
        sys.stdout.write(table_lines(rows))
    return 0


def _emit_walk_forward(args: argparse.Namespace, table: Any, timeframe: ResolvedTimeframe) -> int:
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.plot:
        from tradebot.backtest.report import plot_walk_forward

        path = plot_walk_forward(Path(args.plot) / f"walk_forward_{args.metric}.png", table, args.metric)
        if not args.json:
            print(f"wrote {path}")
    if args.json:
        print(
            json.dumps(
                {
                    "metric": args.metric,
                    "timeframe": timeframe.timeframe,
                    "timeframe_why": timeframe.why,
                    "folds": json.loads(table.to_json(orient="records", date_format="iso")),
                }
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    from tradebot.backtest.report import format_cell, print_table

    view = Table(
        title=f"walk-forward, {len(table)} folds (timeframe {timeframe.label()}), optimising {args.metric}"
    )
    for column in table.columns:
        view.add_column(str(column), justify="right")
    for row in table.itertuples(index=False):
        view.add_row(
            *(format_cell(str(column), value) for column, value in zip(table.columns, row, strict=True))
        )
    print_table(Console(), view)
    return 0
