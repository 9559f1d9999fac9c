"""`tradebot backtest`: one backtest of the crossover strategy over a CSV or Parquet file.

A whole process is what a user waits for, so this module imports almost nothing at the top: the file is
read by pyarrow's threads while the numerical stack (pandas, numba and the kernel) loads beside it and
numba loads the compiled kernel, and `--json` never loads rich or matplotlib. `--profile` prints where the
time went.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tradebot.backtest.cliargs import (
    AUTO_TIMEFRAME,
    UsageError,
    add_data_arguments,
    add_strategy_arguments,
    build_config,
)

if TYPE_CHECKING:
    from tradebot.backtest.data import MarketData, ResolvedTimeframe
    from tradebot.backtest.engine import BacktestConfig


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
    out.add_argument(
        "--profile",
        action="store_true",
        help="print the time spent reading, validating, running and writing to stderr",
    )
    out.add_argument("--engine", choices=("kernel", "reference"), default="kernel", help=argparse.SUPPRESS)


def _process_age() -> float | None:
    """Seconds since this process started (Linux), so the profile includes interpreter start-up."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5), counted after "(comm)"
    return max(0.0, uptime - started)


def _cpu_seconds() -> float:
    """User + system CPU time of the whole process (every thread) so far."""
    times = os.times()
    return times.user + times.system


class Profile:
    """Wall-clock and CPU time per phase, printed as one line on stderr. CPU above wall means threads
    worked in parallel; wall far above CPU means the machine was busy with something else."""

    def __init__(self) -> None:
        self.started_at = _process_age()
        self.cpu_at_start = _cpu_seconds()
        self.phases: dict[str, tuple[float, float]] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            spent_wall, spent_cpu = self.phases.get(name, (0.0, 0.0))
            self.phases[name] = (
                spent_wall + time.perf_counter() - wall,
                spent_cpu + _cpu_seconds() - cpu,
            )

    def line(self) -> str:
        parts = [f"{name} {wall:.3f} s (CPU {cpu:.3f} s)" for name, (wall, cpu) in self.phases.items()]
        age = _process_age()
        if age is not None and self.started_at is not None:
            parts.insert(0, f"start-up and imports {self.started_at:.3f} s (CPU {self.cpu_at_start:.3f} s)")
            parts.append(f"whole process {age:.3f} s (CPU {_cpu_seconds():.3f} s)")
        return "tradebot backtest profile: " + ", ".join(parts)


def _warm_up(json_out: bool) -> None:
    """Runs on a thread while the main thread reads the file (pyarrow's reader releases the GIL): imports
    the numerical stack (pandas, numba, the kernel) and backtests a few constant bars, so that numba has
    loaded the compiled kernel (and, for `--json`, the trade table's encoder) before the real run. Its machine code depends on the argument types only,
    which are the same for every config."""
    import numpy as np
    import pandas as pd

    from tradebot.backtest.engine import BacktestConfig
    from tradebot.backtest.result import run_backtest
    from tradebot.core.params import StrategyParams

    n = 64
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="ts")
    bars = pd.DataFrame(dict.fromkeys(("open", "high", "low", "close", "volume"), np.ones(n)), index=index)
    with contextlib.suppress(Exception):  # only a head start: the real run reports any problem itself
        result = run_backtest(bars, BacktestConfig(StrategyParams(short_window=2, long_window=3)))
        if json_out:
            from tradebot.backtest.jsonrows import rows_json

            rows_json(result.trades.iloc[:0].reindex([0]), indent=True)  # loads the compiled interleave


def as_program() -> None:
    """Run as a program (`tradebot backtest`), not called from other Python code: numba, when it loads
    its implementations, probes SciPy's BLAS for `np.dot` and `np.linalg` in compiled code, which a
    backtest never calls. Where SciPy is installed that probe imports `scipy.linalg` (0.13 s of the
    warm-up, on the path of every run); marked absent, numba goes without BLAS. Only for this process:
    in someone else's process, later code may need both."""
    sys.modules.setdefault("scipy.linalg.cython_blas", None)  # type: ignore[arg-type]


def _error(message: object) -> int:
    print(f"tradebot backtest: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    profile = Profile()
    warm_up = threading.Thread(target=_warm_up, args=(bool(args.json),), name="warm-up", daemon=True)
    warm_up.start()
    try:
        code = _run(args, profile, warm_up)
    finally:
        warm_up.join()  # never leave numba busy on a thread while the interpreter shuts down
    if args.profile and code == 0:
        print(profile.line(), file=sys.stderr)
    return code


def _run(args: argparse.Namespace, profile: Profile, warm_up: threading.Thread) -> int:
    from tradebot.backtest.data import DataError, read_market_data, resolve_timeframe, validate_market_data

    # Read first (the longest step, beside the imports), but report a bad flag before a bad file.
    raw = failed = None
    try:
        with profile.phase("read"):
            raw = read_market_data(args.data)
    except (DataError, OSError) as exc:
        failed = exc
    try:
        # `auto` is resolved once the data is read; every other flag is checked now, before the file.
        config = build_config(args, {"timeframe": "tick"} if args.timeframe == AUTO_TIMEFRAME else None)
    except UsageError as exc:
        return _error(exc)
    data: MarketData
    try:
        if raw is None:
            raise failed or DataError(args.data, "cannot read file")
        with profile.phase("validate"):
            data = validate_market_data(raw)
    except (DataError, OSError) as exc:
        return _error(exc)
    del raw
    if len(data) < 2:
        return _error(f"{args.data} holds {len(data)} {data.kind[:-1]}(s); a backtest needs at least 2")
    with profile.phase("warm-up left after reading"):
        warm_up.join()
    timeframe = resolve_timeframe(data, args.timeframe)
    if timeframe.warning is not None:
        print(f"tradebot backtest: warning: {timeframe.warning}", file=sys.stderr)
    config = with_timeframe(config, timeframe.timeframe)
    return _backtest(args, data, config, timeframe, profile)


def with_timeframe(config: BacktestConfig, timeframe: str) -> BacktestConfig:
    """`config` on `timeframe` (one of the parameters' own timeframes, so nothing to validate again)."""
    import dataclasses

    if config.params.timeframe == timeframe:
        return config
    return dataclasses.replace(config, params=config.params.model_copy(update={"timeframe": timeframe}))


def too_few_bars_warning(bars: int, long_window: int, timeframe: str) -> str | None:
    """Why a run can make no trade at all, said before it runs: the long average needs `long_window` bars
    before the first cross can happen (a run that ends with 0 trades and no word looks like a bug)."""
    if bars > long_window:
        return None
    unit = "prices" if timeframe == "tick" else f"{timeframe} bars"
    return (
        f"the long moving average needs {long_window} {unit} before its first value and the data has {bars}:"
        " no crossing, so no trade, can happen (use a shorter --long-window, or more data)"
    )


def _backtest(
    args: argparse.Namespace,
    data: MarketData,
    config: BacktestConfig,
    timeframe: ResolvedTimeframe,
    profile: Profile,
) -> int:
    import dataclasses

    from tradebot.backtest.data import DataError, at_timeframe
    from tradebot.backtest.result import BacktestResult, run_market_data

    result: BacktestResult
    with profile.phase("run"):
        try:
            bars = at_timeframe(data, config.params.timeframe, args.data)
        except DataError as exc:
            return _error(exc)
        if len(bars) < 2:
            return _error(
                f"{args.data} makes {len(bars)} {config.params.timeframe} bar(s); a backtest needs at least 2"
            )
        if (
            warning := too_few_bars_warning(len(bars), config.params.long_window, config.params.timeframe)
        ) is not None:
            print(f"tradebot backtest: warning: {warning}", file=sys.stderr)
        result = run_market_data(data, bars, config, engine=args.engine)
        result = dataclasses.replace(result, timeframe_why=timeframe.why)

    from tradebot.backtest import report

    with profile.phase("write"):
        if args.json:
            out = sys.stdout
            out.flush()
            for part in report.result_json_parts(result.stats, result.trades, result.params_dict()):
                out.buffer.write(part)
            out.buffer.write(b"\n")
            out.buffer.flush()
        else:
            report.print_report(result.stats, result.trades, setup=result.setup_line())
        if args.result_file:
            Path(args.result_file).write_bytes(
                report.result_json(result.stats, result.trades.iloc[0:0], {}, indent=False) + b"\n"
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
                setup=result.setup_line(),
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
