"""Suite-wide options and fixture plugins; fixtures for real servers live in `tests/plugins/`."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.plugins.servers",
    "tests.plugins.kafka_cluster",
    "tests.plugins.secure_servers",
    "tests.plugins.kube",
    "tests.plugins.tradebot_operator",
    "tests.plugins.cluster",
    "tests.plugins.webhooks",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmarks",
        action="store_true",
        default=False,
        help="run the benchmarks under tests/benchmarks (what `make bench` does); never part of `make test`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The local cluster's tests run last: their session-scoped node (and the pipeline trading on it) is
    # torn down at the session's end, so it must not share the two cores with the rest of the suite.
    items.sort(key=lambda item: "tests/cluster/" in item.nodeid or item.nodeid.startswith("cluster/"))
    if config.getoption("--benchmarks"):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `make bench`")
    benchmarks = Path(__file__).parent / "benchmarks"
    for item in items:
        # By the test's file, not its id: a parameter may name a path under tests/benchmarks (test_docs
        # checks tests/benchmarks/README.md).
        if item.path.is_relative_to(benchmarks):
            item.add_marker(skip)
