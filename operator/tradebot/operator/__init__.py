"""The kopf operator: `TradingStrategy` resources become strategy Deployments, ConfigMaps and backtest Jobs.

Layers (imports point downwards only):
- `command`: `tradebot operator`, which runs kopf with the handlers and an `OperatorMemo`.
- `cleanup`: `tradebot operator --delete-strategies`, the chart's pre-delete hook: deletes the release's
  TradingStrategies and waits while the operator removes their finalizers.
- `handlers`: kopf registrations (handlers, a daemon per resource, indexes); thin, they call the renderers
  and talk to the API only through `kube`.
- `memo`: the in-memory state kopf hands every handler (settings, the API client, wake-ups, locks).
- `kube`: the one door to the API server (reads, server-side apply when something differs, status patches).
- `render`, `status`, `crd`, `spec`: pure functions and models.
- `settings`, `metrics`: its configuration (`TRADEBOT_OPERATOR_*`) and its Prometheus metrics.
"""
