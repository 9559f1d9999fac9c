"""`tradebot <command>`: the one entry point that may import every part of the product.

Each command lives in its own module exposing `build_parser(parser)` and `run(args) -> int`. The module is
imported only when its command runs, so `tradebot --help` stays instant and a service never loads the
backtester's numerical stack (or the other way round).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    name: str
    help: str
    module: str
    # A one-shot computation: run as a program, it exits once its output is flushed, without tearing
    # down what it built (freeing a 10M-bar backtest's arrays and modules one by one takes 0.3 s).
    batch: bool = False


# Add a command by adding a row; keep them in the order a user meets them.
COMMANDS: tuple[Command, ...] = (
    Command(
        "up",
        "run the whole live pipeline on this machine (--embedded: in one process, no servers)",
        "tradebot.up",
    ),
    Command(
        "simulator", "WebSocket market simulator: random walks or a CSV replay", "tradebot.simulator.command"
    ),
    Command(
        "feed", "market-data feed: WebSocket source -> validated ticks on Kafka", "tradebot.feed.command"
    ),
    Command("strategy", "one strategy over the ticks, orders out exactly once", "tradebot.strategy.command"),
    Command(
        "executor", "paper broker: orders -> fills, order log and P&L in Redis", "tradebot.executor.command"
    ),
    Command(
        "api", "HTTP API: orders, fills, positions, P&L, strategies; halt/resume", "tradebot.api.command"
    ),
    Command(
        "notifier",
        "fills and control events to webhooks, Slack, Discord, Telegram",
        "tradebot.notifier.command",
    ),
    Command("dashboard", "Streamlit dashboard over the API", "tradebot.dashboard.command"),
    Command(
        "backtest",
        "backtest the crossover strategy over a CSV or Parquet file",
        "tradebot.backtest.command",
        batch=True,
    ),
    Command(
        "sweep",
        "backtest a grid of parameters in parallel, ranked; optionally walk-forward",
        "tradebot.backtest.sweep_command",
    ),
    Command("operator", "run the TradingStrategy operator (kopf)", "tradebot.operator.command"),
    Command(
        "kafka-acls",
        "the Kafka ACLs of one component's user (least privilege): print or --apply",
        "tradebot.adapters.kafka_acls",
    ),
)


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradebot",
        description="Kubernetes-native algorithmic trading bot.",
        epilog="Run `tradebot <command> --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for command in COMMANDS:
        sub.add_parser(command.name, help=command.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how to see where a service is stuck.
    if hasattr(signal, "SIGUSR1") and sys.__stderr__ is not None:
        # The process's real stderr (sys.stderr may be a capture without a file descriptor).
        with contextlib.suppress(AttributeError, OSError, ValueError):
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    args = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not args or args[0] in ("-h", "--help"):
        top.print_help()
        return 0
    by_name = {command.name: command for command in COMMANDS}
    command = by_name.get(args[0])
    if command is None:
        top.error(f"unknown command {args[0]!r} (choose from {', '.join(by_name) or 'none yet'})")
    module = importlib.import_module(command.module)
    parser = argparse.ArgumentParser(prog=f"tradebot {command.name}", description=command.help)
    module.build_parser(parser)
    parsed = parser.parse_args(args[1:])
    if argv is None and hasattr(module, "as_program"):
        module.as_program()  # what only a process of its own may change (its imports, say)
    code = int(module.run(parsed))
    if command.batch and argv is None:  # a program, not a call from other Python code
        exit_at_once(code)
    return code


def exit_at_once(code: int) -> None:
    """Flush what was written and end the process now: no atexit handlers, no object teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
