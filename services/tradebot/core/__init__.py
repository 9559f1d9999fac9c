"""The pure trading core: domain models, strategy parameters, costs, and the strategy in parts.

The strategy: `rules` (its parameters as one record of numbers, and named codes), the rule
functions in `signals`, `risk` (stops and limits), `sizing` and `book` (which the backtest kernel
compiles as they are), the state machine composing them in `strategy`, and `live` (orders in
flight, for the live service only). No I/O and no clock reads happen here; the live services, the
backtester and the operator all build on it, and it imports nothing else of ours (both enforced by
import-linter).
"""
