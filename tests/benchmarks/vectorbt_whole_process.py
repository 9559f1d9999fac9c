"""vectorbt's side of the whole-process benchmark: what a vectorbt user writes for
`tradebot backtest --data FILE --short-window 10 --long-window 30 --stop-loss-pct 2 --commission-pct 0.1 --json`.

`python vectorbt_whole_process.py FILE.csv`: pandas reads the CSV, vectorbt runs the SMA(10/30) crossover with
a 2% stop and 0.1% fees from 10,000 cash, and every trade is written with the statistics as one JSON
object on stdout. Run as a script, as a whole process.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import vectorbt as vbt


def main(path: str) -> None:
    bars = pd.read_csv(path, index_col=0, parse_dates=True)
    close = bars["close"]
    fast = vbt.MA.run(close, 10)
    slow = vbt.MA.run(close, 30)
    portfolio = vbt.Portfolio.from_signals(
        close,
        fast.ma_crossed_above(slow),
        fast.ma_crossed_below(slow),
        sl_stop=0.02,
        fees=0.001,
        init_cash=10_000,
        freq="1min",
    )
    trades = portfolio.trades.records_readable
    stats = portfolio.stats()
    payload = {
        "stats": json.loads(stats.to_json(default_handler=str)),
        "trades": json.loads(trades.to_json(orient="records", date_format="iso")),
    }
    sys.stdout.write(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
