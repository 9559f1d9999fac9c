"""The root of tradebot's own errors: every error the project raises on purpose derives from `TradebotError`.

Each layer has its own subclasses, so a caller catches what can happen where it calls and lets anything
else (a bug) crash loudly to the supervisor:

- kit: `SettingsError` (bad configuration), `PrometheusNotFoundError`;
- adapters: `BusError` (its `FencedError` and Kafka's `TransactionStuckError`), `StoreError`;
- backtest: `DataError` (bad market data), `UsageError` (bad flags);
- dashboard: `ApiUnavailable`.

`retriable` makes the retry policy explicit, like kopf's `TemporaryError` against `PermanentError`: True when
the same call may succeed later (a broker or Redis away for a while), False when only a change of input,
configuration or code helps.
"""

from __future__ import annotations


class TradebotError(Exception):
    """An error tradebot raises on purpose; `retriable` says whether trying the same again may succeed."""

    retriable: bool = False
