"""Defaults the live services, the backtester and the operator share. Plain values that import nothing,
so `tradebot backtest` can name them while it parses its flags, before pydantic loads."""

# Starting cash, in account currency, of a strategy (live or backtested) that declares none.
DEFAULT_INITIAL_CASH = 10_000.0
