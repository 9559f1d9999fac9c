"""The state store contract: what the executor writes and the API reads (async).

Redis in production (adapters/redis_store.py), a dict in memory for `--embedded` (adapters/memory_store.py).
The store is a projection of the `fills` topic: every fill is applied exactly once, keyed by its
order id, together with the topic offset it came from, so it can be rebuilt from Kafka at any time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tradebot.core.cockpit import StrategyEvent
from tradebot.core.errors import TradebotError
from tradebot.core.models import ClosedBar, Fill, OrderRequest, Position, Signal


class StoreError(TradebotError):
    """The store could not do what was asked (Redis unreachable, out of memory, a refused command);
    `retriable` when it may work later (a lost connection or a timeout). Bad arguments stay ValueErrors."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class ViewLostError(StoreError):
    """The store lost the view it held (Redis restarted empty or was flushed) while fills were being applied
    to it: nothing was changed, and the view must be rebuilt from the `fills` topic."""

    def __init__(self) -> None:
        super().__init__("the store lost the fills it held: rebuild it from the topic", retriable=True)


# Every cursor either store hands out (Redis stream ids `ms-seq`, the memory store's `seq`), and every
# cursor a client may send: the API's schema says this, and each store answers any such cursor with a page.
CURSOR_PATTERN = r"^[0-9]{1,20}(-[0-9]{1,20})?$"
_CURSOR = re.compile(CURSOR_PATTERN)
# The largest part of a Redis stream id; a larger number in a cursor means "after everything".
MAX_CURSOR_PART = 2**64 - 1


def parse_cursor(cursor: str) -> tuple[int, int]:
    """`(first, second)` numbers of a cursor, each at most MAX_CURSOR_PART (second 0 if absent), or
    ValueError for a cursor outside CURSOR_PATTERN."""
    if not _CURSOR.match(cursor):
        raise ValueError(f"invalid cursor {cursor!r}")
    first, _, second = cursor.partition("-")
    return min(int(first), MAX_CURSOR_PART), min(int(second or 0), MAX_CURSOR_PART)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class Query:
    strategy_id: str | None = None
    symbol: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    cursor: str | None = None  # opaque; from a previous Page
    newest_first: bool = True


class Store(Protocol):
    async def ping(self) -> bool: ...

    # Prices (written by the feed).
    async def set_last_price(self, symbol: str, price: float, ts: datetime) -> None: ...
    async def last_prices(self) -> dict[str, tuple[float, datetime]]: ...
    async def append_price(self, symbol: str, price: float, ts: datetime, maxlen: int = 5000) -> None: ...
    async def append_prices(
        self, symbol: str, points: Sequence[tuple[float, datetime]], maxlen: int = 5000
    ) -> None:
        """`append_price` for many points, oldest first, in one round trip."""

    async def record_prices(
        self,
        latest: Mapping[str, tuple[float, datetime]],
        history: Mapping[str, Sequence[tuple[float, datetime]]],
        maxlen: int = 5000,
    ) -> None:
        """`set_last_price` for each symbol of `latest` and `append_prices` for each of `history`, in one
        round trip (the feed's periodic write of every symbol it saw)."""

    async def prices(self, symbol: str, limit: int = 1000) -> list[tuple[datetime, float]]:
        """Oldest first, the newest `limit` points."""

    # The order log and fills (written by the executor), applied exactly once per order id.
    async def apply_fill(
        self,
        order: OrderRequest,
        fill: Fill,
        position: Position,
        source_offset: int,
        *,
        expect_applied: bool = False,
    ) -> bool:
        """Appends the order and its fill to the logs and stores the position, atomically; False (and
        no change) when this order id was already applied. With `expect_applied` (the caller applied fills
        to this view before), a view holding no applied offset lost them: `ViewLostError`, no change, so a
        wiped store is never left holding only the fills after the wipe."""

    async def applied_offset(self) -> int:
        """The `fills` topic offset of the last applied fill (-1 when none): where a rebuild resumes."""

    async def orders(self, query: Query) -> Page: ...
    async def fills(self, query: Query) -> Page: ...
    async def position(self, strategy_id: str, symbol: str) -> Position | None: ...
    async def positions(self, strategy_id: str | None = None) -> list[Position]: ...

    # Signals and equity points (written by the strategy and executor for the dashboard).
    async def append_signal(self, signal: Signal, maxlen: int = 5000) -> None: ...
    async def append_signals(self, signals: Sequence[Signal], maxlen: int = 5000) -> None:
        """`append_signal` for each, in order, in one round trip."""

    async def signals(self, query: Query) -> Page: ...
    async def append_equity(
        self, strategy_id: str, ts: datetime, equity: float, maxlen: int = 10000
    ) -> None: ...

    # Commands given to strategies (halts, resumes, force-exits), for the live page's event log (the API).
    async def append_event(self, event: StrategyEvent, maxlen: int = 5000) -> None: ...
    async def events(self, query: Query) -> Page: ...
    # Closed bars (the executor's projection of `bars`), one per symbol, timeframe and open time.
    async def append_bar(self, bar: ClosedBar, maxlen: int = 100_000) -> bool:
        """Appends `bar` to its timeframe's log unless a bar of that symbol at or after its open time is
        there (another strategy on the timeframe published it, or a redelivery): then False, no change."""

    async def bars(self, timeframe: str, query: Query) -> Page:
        """A timeframe's bars as the other logs page (`strategy_id` is the publisher; `since` on the open)."""

    async def equity_curve(self, strategy_id: str, limit: int = 1000) -> list[tuple[datetime, float]]: ...

    # Strategies: registration and the halt flag.
    async def register_strategy(self, strategy_id: str, info: dict[str, Any]) -> None: ...
    async def strategies(self) -> list[dict[str, Any]]:
        """Each registered strategy's info plus `halted: bool`."""

    async def set_halted(self, strategy_id: str, halted: bool) -> None: ...
    async def is_halted(self, strategy_id: str) -> bool: ...

    # Delivery marks (the notifier): what was delivered already, kept `ttl_s` seconds.
    async def mark_delivered(self, key: str, ttl_s: int) -> None: ...
    async def was_delivered(self, key: str) -> bool: ...

    async def changes(self) -> int | None:
        """A count every write moves on, the write's own effects visible first (None: nothing was written by
        a version that counts). Equal counts, equal contents: a reader keeps an answer while it is unchanged
        (the API's answer cache: one read instead of a dozen). Never goes back, not even on `clear`."""

    async def clear(self) -> None:
        """Forgets everything but `changes` (tests, and the rebuild path)."""

    async def close(self) -> None: ...
