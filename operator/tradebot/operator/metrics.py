"""The operator's Prometheus metrics (catalogued in services/README.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECONCILES = Counter(
    "tradebot_operator_reconciles_total",
    "Reconciliations of TradingStrategy resources, by result.",
    ["result"],
)
ERRORS = Counter(
    "tradebot_operator_errors_total",
    "Reconciliation errors, by retry policy (temporary|permanent).",
    ["kind"],
)
MANAGED = Gauge(
    "tradebot_operator_managed_strategies",
    "TradingStrategy resources the operator manages (those with a valid spec); falls when one is deleted.",
)
BACKTESTS = Counter(
    "tradebot_operator_backtests_total", "Backtest Jobs by result (started|succeeded|failed).", ["result"]
)
API_WRITES = Counter(
    "tradebot_operator_api_writes_total",
    "Writes the operator made to the API server, by verb and kind.",
    ["verb", "kind"],
)

# Known label values start at 0, so rates and alerts see a 0 rather than nothing.
for _result in ("ok", "invalid", "error"):
    RECONCILES.labels(result=_result)
for _kind in ("temporary", "permanent"):
    ERRORS.labels(kind=_kind)
for _result in ("started", "succeeded", "failed"):
    BACKTESTS.labels(result=_result)
