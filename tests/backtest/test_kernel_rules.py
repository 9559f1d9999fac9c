"""The kernel runs the strategy's own rule functions, reads its records by field name, and is never stale.

`test_kernel_parity.py` proves whole runs identical; these pin down the parts: each rule function
compiled gives what it gives in Python, a reordered record changes nothing, a record missing a field
or a sizing code without a rule fails loudly, and numba's on-disk cache follows edits to the rules.
"""

from __future__ import annotations

import collections
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core.errors import TypingError

from tests.backtest.test_kernel_parity import EVERY_RULE, costs, parameters, random_walk
from tradebot.backtest import kernel
from tradebot.backtest.engine import BacktestConfig
from tradebot.backtest.kernel import (
    RULE_FUNCTIONS,
    RULE_MODULES,
    SIMULATE,
    Arrays,
    KernelSetup,
    moving_averages,
)
from tradebot.core import book, risk, signals, sizing
from tradebot.core import costs as costs_module
from tradebot.core.costs import Costs
from tradebot.core.params import StrategyParams
from tradebot.core.rules import ExitCode, Rules, SizingCode

ROOT = Path(__file__).resolve().parents[2]


def rules_of(params: dict[str, Any], cost: Costs) -> Rules:
    if params["sizing"] == "risk-pct:1" and params["stop_loss_pct"] is None:
        params = {**params, "stop_loss_pct": 2.0}
    return Rules.of(StrategyParams.model_validate(params), cost)


def same(python: Any, compiled: Any) -> None:
    """Equal to the bit but for NaN, which equals NaN (np.testing's rule)."""
    np.testing.assert_array_equal(
        np.asarray(compiled, dtype=np.float64), np.asarray(python, dtype=np.float64)
    )


prices = st.floats(0.5, 500.0)
maybe_nan = prices | st.just(math.nan)
quantities = st.sampled_from([0.0, 3.0, -3.0, 0.5, -1e-13]) | st.floats(-100.0, 100.0)
compiled: dict[Callable[..., Any], Any] = {}


def jit(rule: Callable[..., Any]) -> Any:
    if rule not in compiled:
        compiled[rule] = numba.njit(rule)
    return compiled[rule]


@settings(max_examples=300, deadline=None)
@given(
    params=parameters,
    cost=costs,
    qty=quantities,
    entry=prices,
    best=prices,
    bar=st.lists(prices, min_size=3, max_size=3).map(sorted),
    single=st.booleans(),
)
def test_stops_compiled_are_the_stops_in_python(
    params: dict[str, Any], cost: Costs, qty: float, entry: float, best: float, bar: list[float], single: bool
) -> None:
    low, open_, high = (bar[1], bar[1], bar[1]) if single else bar
    rules = rules_of(params, cost)
    args = (rules, qty, entry, best, open_, high, low)
    same(risk.stop_exit(*args), jit(risk.stop_exit)(*args))
    same(risk.trail(qty, best, high, low), jit(risk.trail)(qty, best, high, low))
    for code in (-1, 0, 1, 2, 3, 4):
        same(risk.cooldown_until(rules, code, 7, 3), jit(risk.cooldown_until)(rules, code, 7, 3))


@pytest.mark.parametrize("qty", [1.7e17, 2.0**52, 2.0**63 * 1.5, 1e300, 12.3456])
def test_rounding_to_the_step_compiled_is_the_python_one_even_past_int64(qty: float) -> None:
    for step in (0.001, 1.0, 0.0):
        same(costs_module.floor_to_step(qty, step), jit(costs_module.floor_to_step)(qty, step))


@settings(max_examples=300, deadline=None)
@given(
    params=parameters,
    cost=costs,
    want=st.sampled_from([1, -1]),
    price=prices,
    cash=st.floats(-1000.0, 50_000.0),
    equity=st.floats(-1000.0, 50_000.0),
    other_gross=st.sampled_from([0.0, 2500.0]),
    bar_index=st.integers(0, 9),
    cooldown_end=st.integers(-1, 9),
    day_start=maybe_nan,
)
def test_sizing_and_limits_compiled_are_those_in_python(
    params: dict[str, Any],
    cost: Costs,
    want: int,
    price: float,
    cash: float,
    equity: float,
    other_gross: float,
    bar_index: int,
    cooldown_end: int,
    day_start: float,
) -> None:
    rules = rules_of(params, cost)
    size = (rules, want, price, cash, equity, other_gross)
    same(sizing.entry_size(*size), jit(sizing.entry_size)(*size))
    block = (rules, bar_index, cooldown_end, equity, day_start * 100.0)
    same(risk.entry_block(*block), jit(risk.entry_block)(*block))
    same(risk.tracks_daily_loss(rules), jit(risk.tracks_daily_loss)(rules))


@settings(max_examples=300, deadline=None)
@given(
    cost=costs,
    qty=quantities,
    entry=prices,
    best=prices,
    signed=quantities,
    price=prices,
    cash=st.floats(-1000.0, 50_000.0),
    averages=st.lists(maybe_nan, min_size=4, max_size=4),
)
def test_the_book_and_the_cross_compiled_are_those_in_python(
    cost: Costs,
    qty: float,
    entry: float,
    best: float,
    signed: float,
    price: float,
    cash: float,
    averages: list[float],
) -> None:
    rules = Rules.of(StrategyParams(), cost)
    same(
        book.after_fill(qty, entry, best, signed, price),
        jit(book.after_fill)(qty, entry, best, signed, price),
    )
    same(book.cash_after_exit(rules, cash, qty, price), jit(book.cash_after_exit)(rules, cash, qty, price))
    same(book.execute(rules, 1, abs(qty), price), jit(book.execute)(rules, 1, abs(qty), price))
    same(signals.cross(*averages), jit(signals.cross)(*averages))


@pytest.mark.parametrize("code", list(SizingCode), ids=[code.name for code in SizingCode])
def test_every_sizing_code_has_its_rule(code: SizingCode) -> None:
    """Each code sizes by its own rule: a code added without a rule raises instead of sizing."""
    rules = Rules.of(StrategyParams(stop_loss_pct=2.0), Costs())._replace(sizing=code, sizing_value=10.0)
    sizes = {
        other: sizing.entry_size(rules._replace(sizing=other), 1, 50.0, 10_000.0, 12_000.0, 0.0)
        for other in SizingCode
    }
    assert list(sizes.values()).count(sizes[code]) == 1, f"{code.name} sizes like another code: {sizes}"
    assert jit(sizing.entry_size)(rules, 1, 50.0, 10_000.0, 12_000.0, 0.0) == sizes[code]


def test_an_unknown_sizing_code_fails_loudly() -> None:
    rules = Rules.of(StrategyParams(), Costs())._replace(sizing=len(SizingCode))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown sizing code"):
        sizing.entry_size(rules, 1, 50.0, 10_000.0, 10_000.0, 0.0)
    with pytest.raises(ValueError, match="unknown sizing code"):
        jit(sizing.entry_size)(rules, 1, 50.0, 10_000.0, 10_000.0, 0.0)


def test_every_rule_module_is_in_the_kernel_cache_key() -> None:
    """numba does not see edits to files other than the kernel's: the modules whose functions and
    codes it compiles are hashed into its cache key, so a rule function from a new module must add
    the module there."""
    compiled_from = {inspect.getmodule(rule) for rule in RULE_FUNCTIONS}
    compiled_from |= {inspect.getmodule(code) for code in (ExitCode, SizingCode, risk.EntryBlock)}
    assert compiled_from <= set(RULE_MODULES)


# The kernel's records with their fields in reverse order: numba must read them by name.
ReversedRules = collections.namedtuple("ReversedRules", list(reversed(Rules._fields)))  # type: ignore[misc]
ReversedSetup = collections.namedtuple("ReversedSetup", list(reversed(KernelSetup._fields)))  # type: ignore[misc]
# Rules lacking a field.
Incomplete = collections.namedtuple("Incomplete", [f for f in Rules._fields if f != "cooldown_bars"])  # type: ignore[misc]


def kernel_inputs() -> tuple[Arrays, np.ndarray, np.ndarray, KernelSetup]:
    params = {**EVERY_RULE, "sizing": "equity-pct:50", "risk": {**EVERY_RULE["risk"], "max_position_qty": 60}}
    config = BacktestConfig(
        params=StrategyParams.model_validate(params),
        costs=Costs(commission_pct=0.05, commission_fixed=0.5, slippage_bps=2),
        fill="next-open",
    )
    arrays = Arrays.from_frame(random_walk(3000, seed=3))
    short_ma, long_ma = moving_averages(arrays, config)
    return arrays, short_ma, long_ma, KernelSetup.of(config)


def test_the_kernel_reads_its_records_by_field_name() -> None:
    arrays, short_ma, long_ma, setup = kernel_inputs()
    expected = SIMULATE(arrays.kernel_bars(setup.rules), short_ma, long_ma, setup, True)
    assert len(expected.trades) > 50
    reversed_setup: Any = ReversedSetup(
        **{**setup._asdict(), "rules": ReversedRules(**setup.rules._asdict())}
    )
    # The kernel without its on-disk cache: a type from this module in the cache's index would
    # make every later process that loads the index need `tests` importable.
    run = kernel._simulate(arrays.kernel_bars(setup.rules), short_ma, long_ma, reversed_setup, True)
    assert run.summary == expected.summary
    np.testing.assert_array_equal(run.trades, expected.trades)
    np.testing.assert_array_equal(run.equity, expected.equity)


def test_a_record_missing_a_field_does_not_compile() -> None:
    rules = Rules.of(StrategyParams(), Costs())
    incomplete = Incomplete(**{f: v for f, v in rules._asdict().items() if f != "cooldown_bars"})
    with pytest.raises(TypingError, match="cooldown_bars"):
        jit(risk.cooldown_until)(incomplete, 1, 7, 3)


CACHE_PROBE = """
import json, sys
import numpy as np
from tradebot.backtest.data import synthetic_ohlcv
from tradebot.backtest.engine import BacktestConfig, run_reference
from tradebot.backtest.kernel import SIMULATE, run_kernel
from tradebot.core import signals
from tradebot.core.params import StrategyParams

bars = synthetic_ohlcv(2000, seed=5, freq="1h")
config = BacktestConfig(params=StrategyParams(short_window=5, long_window=20, stop_loss_pct=2, allow_short=True))
fast = run_kernel(bars, config)
reference = run_reference(bars, config)
print(json.dumps({
    "trades": fast.trades.exit_reason.tolist(),
    "same_as_reference": fast.trades.equals(reference.trades),
    "cache_hits": sum(SIMULATE.stats.cache_hits.values()),
    "rules_from": signals.__file__,
}))
"""


def test_the_cached_kernel_follows_an_edit_to_the_rules(tmp_path: Path) -> None:
    """numba caches the kernel on disk; editing a rule module (not the kernel's file) must not leave
    a stale kernel behind: after the edit the kernel still matches the (edited) reference."""
    copy = tmp_path / "src" / "tradebot"
    shutil.copytree(ROOT / "services" / "tradebot" / "core", copy / "core")
    shutil.copytree(ROOT / "backtest" / "tradebot" / "backtest", copy / "backtest")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def probe() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE], env=env, capture_output=True, text=True, check=True
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    first = probe()
    again = probe()
    assert Path(first["rules_from"]) == copy / "core" / "signals.py"
    assert first["same_as_reference"]
    assert (first["cache_hits"], again["cache_hits"]) == (0, 1), "the kernel is not cached on disk"
    assert again["trades"] == first["trades"]

    edited = copy / "core" / "signals.py"  # every cross now reads the other way
    source = edited.read_text()
    assert source.count("return UP\n") == source.count("return DOWN\n") == 1
    edited.write_text(
        source.replace("return UP\n", "return UP_\n")
        .replace("return DOWN\n", "return UP\n")
        .replace("return UP_\n", "return DOWN\n")
    )
    after = probe()
    assert after["cache_hits"] == 0
    assert after["same_as_reference"], "the kernel ran stale compiled rules"
    assert after["trades"] != first["trades"]


def test_records_are_what_the_reference_configuration_says() -> None:
    """`KernelSetup.of` takes the fill model and the cash from the configuration, the rest from `Rules`."""
    config = BacktestConfig(params=StrategyParams(), initial_cash=1234.0, fill="next-open")
    setup = KernelSetup.of(config)
    assert (setup.next_open, setup.initial_cash) == (True, 1234.0)
    assert setup.rules == Rules.of(config.params, config.costs)
    assert not KernelSetup.of(BacktestConfig(params=StrategyParams())).next_open


def test_the_two_averages_computed_at_once_equal_one_after_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long series compute the long average on a thread of its own: the same arrays as one after the
    other, for simple and exponential averages."""
    arrays = Arrays.from_frame(random_walk(5_000, seed=8))
    for ma_type in ("sma", "ema"):
        config = BacktestConfig(params=StrategyParams(short_window=7, long_window=40, ma_type=ma_type))
        monkeypatch.setattr(kernel, "PARALLEL_AVERAGES_FROM", 10**9)
        serial = moving_averages(arrays, config)
        monkeypatch.setattr(kernel, "PARALLEL_AVERAGES_FROM", 100)
        parallel = moving_averages(arrays, config)
        for one, other in zip(serial, parallel, strict=True):
            np.testing.assert_array_equal(one, other)
        assert not np.array_equal(parallel[0], parallel[1], equal_nan=True)
