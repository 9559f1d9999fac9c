"""The kopf operator: `TradingStrategy` resources become strategy Deployments, ConfigMaps and backtest Jobs.

Layers (imports point downwards only):
- `handlers`: kopf registrations; thin, they call `reconcile` and talk to the API through `kube`.
- `reconcile`: decisions (what to apply, which status to write), no I/O of its own.
- `render`, `status`, `crd`, `spec`: pure functions and models.
"""
