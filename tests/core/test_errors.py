"""One error family: every exception class tradebot defines derives from `TradebotError`, and the runners
catch what can happen (bus and store errors) rather than everything, so a bug reaches the supervisor."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tradebot.adapters.bus import BusError, FencedError
from tradebot.adapters.kafka import TransactionStuckError
from tradebot.adapters.store import StoreError
from tradebot.core.errors import TradebotError

REPO = Path(__file__).resolve().parents[2]
SOURCES = [REPO / "services", REPO / "backtest", REPO / "operator"]
# The long-running loops of the live pipeline.
RUNNERS = [
    REPO / "services" / "tradebot" / "adapters" / "transactional.py",
    *sorted((REPO / "services" / "tradebot" / "strategy").glob("*.py")),
    *sorted((REPO / "services" / "tradebot" / "executor").glob("*.py")),
    *sorted((REPO / "services" / "tradebot" / "feed").glob("*.py")),
]
CATCH_ALL = {"Exception", "BaseException"}


def module_name(path: Path) -> str:
    root = next(base for base in SOURCES if base in path.parents)
    return ".".join(path.relative_to(root).with_suffix("").parts)


def defined_exceptions() -> list[tuple[str, type[BaseException]]]:
    """Every exception class defined in tradebot's modules (a module is imported only when its source
    defines a class with a base class, so the Streamlit pages are not run)."""
    found: list[tuple[str, type[BaseException]]] = []
    for base in SOURCES:
        for path in sorted((base / "tradebot").rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.bases]
            if not classes:
                continue
            module = importlib.import_module(module_name(path))
            for name in classes:
                cls = getattr(module, name, None)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    found.append((f"{module.__name__}.{name}", cls))
    return found


def test_every_exception_tradebot_defines_is_a_tradebot_error() -> None:
    found = dict(defined_exceptions())
    assert {"tradebot.adapters.bus.BusError", "tradebot.kit.settings.SettingsError"} <= set(found)
    outsiders = sorted(name for name, cls in found.items() if not issubclass(cls, TradebotError))
    assert outsiders == []


def test_retriable_says_whether_trying_again_may_help() -> None:
    assert BusError("timed out", retriable=True).retriable
    assert not FencedError("fenced").retriable
    assert TransactionStuckError("stuck").retriable  # a new producer fences the stuck one and retries
    assert StoreError("connection refused", retriable=True).retriable
    assert not TradebotError("generic").retriable


@pytest.mark.parametrize("path", RUNNERS, ids=lambda path: str(path.relative_to(REPO)))
def test_the_runners_catch_what_can_happen_not_everything(path: Path) -> None:
    catch_all = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.ExceptHandler)
        and (
            node.type is None
            or (isinstance(node.type, ast.Name) and node.type.id in CATCH_ALL)
            or (
                isinstance(node.type, ast.Tuple)
                and any(isinstance(e, ast.Name) and e.id in CATCH_ALL for e in node.type.elts)
            )
        )
    ]
    assert catch_all == [], f"{path.name} catches everything at lines {catch_all}"
