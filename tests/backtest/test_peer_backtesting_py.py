"""Checked against a peer: backtesting.py's classic SmaCross(10, 20) on its bundled GOOG data.

With fills at the next open, shorts, all-in sizing, 0.2% commission and no stops, our trades match
its trades one for one (entry bar, exit bar, side) and the total return agrees within 1%.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

backtesting = pytest.importorskip(
    "backtesting", reason="backtesting.py is a dev dependency: pip install -e '.[dev]'"
)


def _their_result() -> tuple[Any, pd.DataFrame]:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import GOOG, SMA

    class SmaCross(Strategy):  # type: ignore[misc]
        n1 = 10
        n2 = 20

        def init(self) -> None:
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.position.close()
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.position.close()
                self.sell()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(
            GOOG, SmaCross, cash=10_000, commission=0.002, exclusive_orders=True, finalize_trades=True
        ).run()
    return stats, GOOG


def test_trades_and_return_match_backtesting_py(tmp_path: Path) -> None:
    stats, goog = _their_result()
    csv = tmp_path / "goog.csv"
    goog.rename_axis("timestamp").to_csv(csv)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tradebot.cli",
            "backtest",
            "--data",
            str(csv),
            "--short-window",
            "10",
            "--long-window",
            "20",
            "--fill",
            "next-open",
            "--allow-short",
            "--sizing",
            "all-in",
            "--commission-pct",
            "0.2",
            "--initial-cash",
            "10000",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)

    theirs = stats["_trades"]
    index = goog.index
    their_trades = [
        (str(index[row.EntryBar].date()), str(index[row.ExitBar].date()), "long" if row.Size > 0 else "short")
        for row in theirs.itertuples()
    ]
    our_trades = [(t["entry_time"][:10], t["exit_time"][:10], t["side"]) for t in ours["trades"]]
    assert len(our_trades) == len(their_trades) > 50
    assert our_trades == their_trades
    their_return = float(stats["Return [%]"])
    assert ours["stats"]["total_return_pct"] == pytest.approx(their_return, rel=0.01)
    np.testing.assert_allclose(
        [t["entry_price"] for t in ours["trades"]], theirs["EntryPrice"].to_numpy(), rtol=1e-12
    )
