"""The documentation against the code: every `TRADEBOT_*` variable the code reads is listed in
services/README.md, and every repository path a README names exists."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
# The product's code: one `tradebot` namespace spread over these folders (see pyproject.toml).
SOURCE_ROOTS = [ROOT / "services", ROOT / "backtest", ROOT / "operator"]
CONFIGURATION = ROOT / "services" / "README.md"

_SETTINGS_CLASS = re.compile(r"^class \w+\([^)]*Settings[^)]*\):", re.M)
_VARIABLE = re.compile(r"\bTRADEBOT_[A-Z0-9_]*[A-Z0-9]\b")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
# A path as a README writes one: names, dots, dashes and slashes only (no placeholder, no flag, no URL).
_PATH_LIKE = re.compile(r"^[\w.\-]+(/[\w.\-*]+)+/?$")


def _source_files() -> Iterator[Path]:
    for root in SOURCE_ROOTS:
        yield from sorted((root / "tradebot").rglob("*.py"))


def _module_name(path: Path) -> str:
    root = next(r for r in SOURCE_ROOTS if path.is_relative_to(r))
    return ".".join(path.relative_to(root).with_suffix("").parts)


def _all_subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def settings_classes() -> list[type[BaseSettings]]:
    """Every pydantic-settings class the product defines (their modules imported first)."""
    for path in _source_files():
        if _SETTINGS_CLASS.search(path.read_text()):
            importlib.import_module(_module_name(path))
    found = {cls for cls in _all_subclasses(BaseSettings) if cls.__module__.startswith("tradebot.")}
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def settings_variables(classes: Iterable[type[BaseSettings]]) -> set[str]:
    """The environment variable of each field, as pydantic-settings reads it: the prefix and the field's
    name, or the field's own alias (which pydantic-settings reads without the prefix)."""
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            first = alias.choices[0] if isinstance(alias, AliasChoices) else alias
            key = first.path[0] if isinstance(first, AliasPath) else first
            names.add((key if isinstance(key, str) else f"{prefix}{name}").upper())
    return names


def environ_reads(source: str) -> set[str]:
    """`TRADEBOT_*` names read straight from the environment: `os.environ[...]`, `os.environ.get(...)`,
    `os.getenv(...)`. Writes (an environment built for a child process) are not reads."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
            if isinstance(node.ctx, ast.Load):
                key = node.slice
        elif isinstance(node, ast.Call) and node.args:
            called = ast.unparse(node.func)
            if called.endswith(("environ.get", "getenv")):
                key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.startswith("TRADEBOT_"):
            names.add(key.value)
    return names


def variables_read() -> set[str]:
    read = settings_variables(settings_classes())
    for path in _source_files():
        read |= environ_reads(path.read_text())
    return read


def undocumented(read: set[str], readme: str) -> list[str]:
    return sorted(read - set(_VARIABLE.findall(readme)))


def readmes() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "*README.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in tracked]


def missing_paths(readme: Path, text: str) -> list[str]:
    """Paths in backticks that look like paths of this repository (their first part is an entry of the
    repository's root or of the README's folder) and exist in neither place."""
    missing = []
    for span in _CODE_SPAN.findall(text):
        if not _PATH_LIKE.match(span):
            continue
        bases = [base for base in (ROOT, readme.parent) if (base / span.split("/")[0]).exists()]
        if bases and not any(list(base.glob(span.rstrip("/"))) for base in bases):
            missing.append(span)
    return missing


# -- the documentation as it is ---------------------------------------------------------------------
def test_every_variable_the_code_reads_is_documented() -> None:
    read = variables_read()
    # The finder itself sees the shared, per-service and direct reads (else it would pass on nothing).
    assert {"TRADEBOT_KAFKA_BOOTSTRAP", "TRADEBOT_OPERATOR_NAMESPACES", "TRADEBOT_TOOLS_DIR"} <= read
    assert undocumented(read, CONFIGURATION.read_text()) == []


@pytest.mark.parametrize("readme", readmes(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_path_a_readme_names_exists(readme: Path) -> None:
    assert missing_paths(readme, readme.read_text()) == []


def test_the_operator_package_names_each_of_its_modules_once() -> None:
    """Its docstring lists the modules layer by layer: none missing, none that is not there."""
    package = ROOT / "operator" / "tradebot" / "operator"
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    listed = [name for line in doc.splitlines() if line.startswith("- ") for name in layer_names(line)]
    modules = sorted(path.stem for path in package.glob("*.py") if path.stem != "__init__")
    assert sorted(listed) == modules


def layer_names(line: str) -> list[str]:
    """The module names a layer line of a package docstring starts with (`- `a`, `b`: what they do`)."""
    head = line[2:].split(":", 1)[0]
    return [span for span in _CODE_SPAN.findall(head) if span.isidentifier()]


# -- the checks catch what they are for --------------------------------------------------------------
def test_a_variable_missing_from_the_readme_is_caught() -> None:
    readme = CONFIGURATION.read_text()
    read = variables_read()
    already = set(undocumented(read, readme))  # empty while the README is complete
    assert set(undocumented(read, readme.replace("`TRADEBOT_REDIS_PREFIX`", ""))) - already == {
        "TRADEBOT_REDIS_PREFIX"
    }
    assert set(undocumented(read | {"TRADEBOT_NOT_A_SETTING"}, readme)) - already == {
        "TRADEBOT_NOT_A_SETTING"
    }


def test_direct_environment_reads_are_found_and_writes_are_not() -> None:
    source = (
        "import os\n"
        "a = os.environ.get('TRADEBOT_A')\n"
        "b = os.environ['TRADEBOT_B']\n"
        "c = os.getenv('TRADEBOT_C', 'x')\n"
        "os.environ['TRADEBOT_WRITTEN'] = '1'\n"
        "env = {'TRADEBOT_CHILD': '1'}\n"
    )
    assert environ_reads(source) == {"TRADEBOT_A", "TRADEBOT_B", "TRADEBOT_C"}


def test_a_path_that_is_not_there_is_caught() -> None:
    readme = ROOT / "tests" / "README.md"
    text = "`tests/core`, `tests/unit`, `services/tradebot/kit/settings.py`, `README.md`, `halt/resume`"
    assert missing_paths(readme, text) == ["tests/unit"]
