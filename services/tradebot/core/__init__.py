"""The pure trading core: domain models, strategy parameters, the strategy state machine, costs.

No I/O and no clock reads happen here; the live services, the backtester and the operator all
build on it, and it imports nothing else of ours (enforced by import-linter).
"""
