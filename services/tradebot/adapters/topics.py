"""The pipeline's topics and the JSON envelopes on them (documented in services/README.md).

Every value is versioned JSON (`schema_version` inside each model). Keys are the symbol, so one
symbol's messages stay in order on one partition; each strategy's state is its own compacted topic,
`strategy-state.<id>` (the latest snapshot is what a restart needs; one topic each so that Kafka ACLs can let a
strategy write its own state and no other's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tradebot.adapters.bus import TopicSpec
from tradebot.core.bars import Bar
from tradebot.core.live import force_exit_cause
from tradebot.core.models import AwareDatetime, ClosedBar, Fill, Identifier, OrderRequest, Position, Symbol

TICKS = "ticks"
TICKS_DLQ = "ticks.dlq"
ORDERS = "orders"
FILLS = "fills"
SIGNALS = "signals"
# Before per-strategy state topics every strategy's snapshot was on this one (read once for a migration).
STRATEGY_STATE = "strategy-state"
# Halt and resume commands, keyed by strategy id: the source of truth of whether a strategy may enter.
CONTROL = "strategy-control"
# Force-exit and close-all commands, keyed by strategy id, read by the strategy itself (it owns its
# positions, so it sends the exit order and knows at once that the position is closed).
COMMANDS = "strategy-commands"
# Closed bars, keyed by symbol: the dashboard's candles and a restarting strategy's warm-up history.
BARS = "bars"
# The executor's book: the position after each fill, keyed "strategy|symbol", compacted (its rebuild).
POSITIONS = "positions"

DAY_MS = 86_400_000


def pipeline_topics(partitions: int = 6) -> list[TopicSpec]:
    return [
        TopicSpec(TICKS, partitions=partitions, retention_ms=DAY_MS),
        TopicSpec(TICKS_DLQ, partitions=1, retention_ms=7 * DAY_MS),
        TopicSpec(ORDERS, partitions=partitions, retention_ms=30 * DAY_MS),
        # The fills topic is the executor's source of truth (the Redis view is rebuilt from it): one
        # partition keeps a single order of fills, and nothing expires.
        TopicSpec(FILLS, partitions=1, retention_ms=-1),
        TopicSpec(SIGNALS, partitions=partitions, retention_ms=7 * DAY_MS),
        # 30 days: a warm-up of 10,000 (MAX_WINDOW) bars of 1m is 7 days; of 1h or 1d they are on the
        # dataset named in the strategy's settings instead.
        TopicSpec(BARS, partitions=partitions, retention_ms=30 * DAY_MS),
        # Compacted: the latest command per strategy is its state, kept forever however old.
        TopicSpec(CONTROL, partitions=1, compacted=True),
        # Not compacted: each command is an event; one partition keeps them in the order given.
        TopicSpec(COMMANDS, partitions=1, retention_ms=7 * DAY_MS),
        # Compacted, segments rolled hourly: the executor's rebuild reads one record per position plus at
        # most about an hour of fills, however long `fills` is.
        TopicSpec(POSITIONS, partitions=1, compacted=True, segment_ms=3_600_000),
    ]


def strategy_state_topic(strategy_id: str) -> str:
    """The compacted topic of one strategy's snapshot."""
    return f"{STRATEGY_STATE}.{strategy_id}"


def strategy_topics(strategy_id: str) -> list[TopicSpec]:
    """The topics one strategy adds to the pipeline's: its state."""
    return [TopicSpec(strategy_state_topic(strategy_id), partitions=1, compacted=True)]


def position_key(strategy_id: str, symbol: str) -> bytes:
    return f"{strategy_id}|{symbol}".encode()


class FillRecord(BaseModel):
    """A value on `fills`: the order, what happened to it, and the position after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    order: OrderRequest
    fill: Fill
    position: Position


def closed_bar(symbol: str, timeframe: str, bar: Bar, source: str) -> ClosedBar:
    """A value on `bars` (key: the symbol)."""
    return ClosedBar(
        symbol=symbol,
        timeframe=timeframe,
        ts=datetime.fromtimestamp(0, UTC) + timedelta(microseconds=bar.start_ns // 1000),
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
        source=source,
    )


class HaltCommand(BaseModel):
    """A value on `strategy-control` (key: the strategy id): halt (no new entries) or resume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    strategy_id: str
    halted: bool

    def key(self) -> bytes:
        return self.strategy_id.encode()


# What a command id may be (a client's idempotency key): it seeds the exit orders' ids.
COMMAND_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class ExitCommand(BaseModel):
    """A value on `strategy-commands` (key: the strategy id): close the strategy's position in `symbol`, or
    in each of its symbols when `symbol` is None (close-all). The strategy executes a `command_id` once (it
    keeps the ids handled in its snapshot), so a repeated command (a client's retry) makes no second exit;
    a batch replayed after a crash makes the same orders (their ids: the command and the position's entry
    order), which the executor fills once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    command_id: str = Field(pattern=COMMAND_ID_PATTERN)
    strategy_id: Identifier
    symbol: Symbol | None = None
    ts: AwareDatetime

    def key(self) -> bytes:
        return self.strategy_id.encode()

    def cause(self, entry_order_id: str = "") -> str:
        """The cause of the exit of the position `entry_order_id` opened (with the strategy and symbol, the
        exit order's id): `LiveStrategy.force_exit_once` makes it so."""
        return force_exit_cause(self.command_id, entry_order_id)


@dataclass(frozen=True)
class DeadLetter:
    """A value on `ticks.dlq`: the raw message and why it was refused."""

    source: str
    reason: str
    raw: str
    received_at: str

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "schema_version": 1,
            "source": self.source,
            "reason": self.reason,
            "raw": self.raw,
            "received_at": self.received_at,
        }
        return json.dumps(body).encode()
