"""Suite-wide options and fixture plugins; fixtures for real servers live in `tests/plugins/`."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.plugins.servers", "tests.plugins.kube", "tests.plugins.tradebot_operator"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmarks",
        action="store_true",
        default=False,
        help="run the benchmarks under tests/benchmarks (what `make bench` does); never part of `make test`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--benchmarks"):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `make bench`")
    for item in items:
        if "tests/benchmarks/" in item.nodeid or item.nodeid.startswith("benchmarks/"):
            item.add_marker(skip)
