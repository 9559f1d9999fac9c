"""The kit's tests read settings from the environment: start each from a clean `TRADEBOT_*` slate."""

from __future__ import annotations

import os

import pytest

# Set by the Makefile for tool lookups, not a service setting.
_KEEP = frozenset({"TRADEBOT_TOOLS_DIR"})


@pytest.fixture(autouse=True)
def _clean_tradebot_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("TRADEBOT_") and name.upper() not in _KEEP:
            monkeypatch.delenv(name)
