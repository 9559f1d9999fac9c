"""`tradebot api`: the HTTP API over the store (Redis)."""

from __future__ import annotations

import argparse

from tradebot.kit.lifecycle import run_service
from tradebot.kit.settings import load_settings_or_exit


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serves orders, fills, positions, P&L and strategies on TRADEBOT_HTTP_PORT (OpenAPI at /docs)."
    )


def run(args: argparse.Namespace) -> int:
    del args
    from tradebot.adapters.connect import kafka_bus, redis_store
    from tradebot.api.app import ApiSettings, create_api

    settings = load_settings_or_exit(ApiSettings)
    app = create_api(settings, redis_store(settings), bus=kafka_bus(settings))
    return run_service(None, settings, app=app)
