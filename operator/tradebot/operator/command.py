"""`tradebot operator`: run the kopf operator (JSON logs, /healthz liveness, /metrics, graceful SIGTERM)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf
from prometheus_client import disable_created_metrics, start_http_server

from tradebot.kit.logging import JsonFormatter
from tradebot.operator import cleanup
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
    parser.add_argument(
        "--delete-strategies",
        action="store_true",
        help="instead of running the operator: delete the TradingStrategies matching --selector in each "
        "--namespace and wait until the running operator has finalized them (the chart's pre-delete hook)",
    )
    parser.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label of the TradingStrategies to delete (repeatable; all must match)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the deleted ones to be gone"
    )


class OperatorJsonFormatter(JsonFormatter):
    """The services' JSON line (`ts`, `level`, `logger`, `message`), with kopf's object reference as `object`."""

    def format(self, record: logging.LogRecord) -> str:
        fields = vars(record)
        fields.pop("k8s_skip", None)
        ref = fields.pop("k8s_ref", None)
        if ref is not None:
            fields.setdefault("object", ref)
        return super().format(record)


def use_service_log_format() -> None:
    """Every handler kopf installed writes the services' JSON lines, so one log pipeline reads them all."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(OperatorJsonFormatter("operator"))
    # The kubelet's probes of /healthz every few seconds are noise at INFO; failures still show.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def delete_strategies(args: argparse.Namespace) -> int:
    """The pre-delete hook: 0 once every matching TradingStrategy is gone, 1 if some remain or on bad args."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OperatorJsonFormatter("operator"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger("tradebot.operator.cleanup")
    try:
        selector = cleanup.parse_selector(args.selector)
        if not args.namespace:
            raise ValueError("--delete-strategies needs --namespace")
        asyncio.run(cleanup.delete_all(args.namespace, selector, wait_seconds=args.timeout))
    except (ValueError, cleanup.StrategiesRemainError) as exc:
        log.error(str(exc))
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.delete_strategies:
        return delete_strategies(args)
    settings = OperatorSettings()
    namespaces = list(args.namespace or settings.namespaces)
    kopf.configure(verbose=bool(args.verbose), log_format=kopf.LogFormat.JSON, log_prefix=False)
    use_service_log_format()
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
        memo=OperatorMemo(settings=settings.model_copy(update={"namespaces": namespaces})),
    )
    return 0
