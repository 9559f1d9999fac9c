"""Fixtures for real servers live in plugins: one module per family of components."""

pytest_plugins = ["tests.plugins.servers", "tests.plugins.kube"]
