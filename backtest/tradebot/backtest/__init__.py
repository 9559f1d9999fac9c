"""Backtesting: data loading, engines, metrics, sweeps and reports."""
