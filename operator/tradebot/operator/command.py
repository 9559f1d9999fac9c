"""`tradebot operator`: run the kopf operator (JSON logs, /healthz liveness, /metrics, graceful SIGTERM)."""

from __future__ import annotations

import argparse
import logging

import kopf
from prometheus_client import disable_created_metrics, start_http_server

from tradebot.operator.memo import OperatorMemo
from tradebot.operator.settings import OperatorSettings


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="watch only this namespace (repeatable); default: TRADEBOT_OPERATOR_NAMESPACES or cluster-wide",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    settings = OperatorSettings()
    namespaces = list(args.namespace or settings.namespaces)
    kopf.configure(verbose=bool(args.verbose), log_format=kopf.LogFormat.JSON, log_prefix=False)
    # One line per API request is noise at INFO; kopf reports what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("tradebot.operator").info("starting", extra={"namespaces": namespaces or "*"})
    disable_created_metrics()  # type: ignore[no-untyped-call]  # as the services do
    start_http_server(settings.metrics_port, addr=settings.host)
    # Importing the module registers the handlers with kopf's default registry.
    import tradebot.operator.handlers  # noqa: F401

    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{settings.host}:{settings.liveness_port}/healthz",
        memo=OperatorMemo(settings=settings),
    )
    return 0
