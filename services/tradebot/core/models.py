"""Domain messages: what flows between feed, strategy, executor and API, and what Kafka carries.

Every model is strict (no silent coercion), frozen, rejects unknown fields, and carries a
`schema_version` so consumers can tell old messages from new ones. Timestamps must be timezone
aware; prices and sizes must be finite and positive. Errors name the offending field.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number (not NaN or infinity)")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (e.g. 2024-01-02T15:04:05Z)")
    return value


FiniteFloat = Annotated[float, AfterValidator(_finite)]
Price = Annotated[float, Field(gt=0), AfterValidator(_finite)]
Quantity = Annotated[float, Field(gt=0), AfterValidator(_finite)]
NonNegative = Annotated[float, Field(ge=0), AfterValidator(_finite)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
Symbol = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._:/-]+$")]
Identifier = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderReason(StrEnum):
    """Why an order was sent; exits carry the rule that closed the position."""

    ENTRY_LONG = "entry_long"
    ENTRY_SHORT = "entry_short"
    EXIT_CROSS = "exit_cross"
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    END_OF_DATA = "end_of_data"
    # Closed by a person through the API (force-exit of one trade, or close-all of a strategy).
    FORCE_EXIT = "force_exit"


class Message(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


class Tick(Message):
    """One trade or quote print for a symbol."""

    symbol: Symbol
    price: Price
    size: NonNegative = 0.0
    ts: AwareDatetime
    # Position in the source's stream when it has one (replays and exchanges number their prints).
    seq: int | None = Field(default=None, ge=0)


class Bar(Message):
    """OHLCV over one interval starting at `ts`."""

    symbol: Symbol
    ts: AwareDatetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: NonNegative = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> Bar:
        if self.high < max(self.open, self.close, self.low):
            raise ValueError("high must be >= open, close and low")
        if self.low > min(self.open, self.close):
            raise ValueError("low must be <= open and close")
        return self


class ClosedBar(Bar):
    """A bar a strategy built from ticks and closed (on `bars`, in the store, from `GET /bars`): `ts` is its
    open time; `source` the strategy that published it (several on one timeframe publish the same bar)."""

    timeframe: str = Field(min_length=2, max_length=4)
    source: Identifier


class Signal(Message):
    """A moving-average cross observed by a strategy (emitted whether or not it trades)."""

    strategy_id: Identifier
    symbol: Symbol
    ts: AwareDatetime
    direction: Literal["up", "down"]
    short_ma: FiniteFloat
    long_ma: FiniteFloat
    price: Price


def order_id(strategy_id: str, symbol: str, cause: str, leg: int = 0) -> str:
    """Deterministic id: the same strategy, symbol and causing event always give the same id,
    so a replay or a crash-restart re-emits identical orders and the executor can de-duplicate."""
    digest = hashlib.sha256(f"{strategy_id}|{symbol}|{cause}|{leg}".encode()).hexdigest()
    return f"{strategy_id}-{digest[:20]}"


class OrderRequest(Message):
    id: str = Field(min_length=1, max_length=128)
    strategy_id: Identifier
    symbol: Symbol
    side: Side
    qty: Quantity
    reason: OrderReason
    # The price the strategy saw when it decided (the executor's price band check uses it).
    ref_price: Price
    ts: AwareDatetime
    # The event that caused the order (e.g. "tick:AAPL:1234:2024-01-02T15:04:05+00:00" or "bar:2024-01-02T00:00:00+00:00").
    cause: str = Field(min_length=1, max_length=256)


class FillStatus(StrEnum):
    FILLED = "filled"
    REJECTED = "rejected"


class RejectCode(StrEnum):
    """Why the broker refused an order, as a fixed code (`reject_reason` says it in words)."""

    HALTED = "halted"
    MAX_QTY = "max_qty"
    MAX_NOTIONAL = "max_notional"
    PRICE_BAND = "price_band"
    IN_POSITION = "in_position"
    NO_POSITION = "no_position"
    NOT_FINITE = "not_finite"


ENTRY_REASONS = frozenset({OrderReason.ENTRY_LONG, OrderReason.ENTRY_SHORT})


def position_refusal(reason: OrderReason, side: Side, qty: float, position: float) -> RejectCode | None:
    """The broker's position rule: an entry needs a flat position, an exit must close (part of) it.

    Shared by the paper broker, which applies it, and the live strategy, which predicts with it
    which of its orders in flight the broker will refuse."""
    if reason in ENTRY_REASONS:
        return RejectCode.IN_POSITION if position != 0.0 else None
    closes = (position > 0 and side.sign < 0) or (position < 0 and side.sign > 0)
    if not closes or qty > abs(position) + 1e-9:
        return RejectCode.NO_POSITION
    return None


class Fill(Message):
    order_id: str = Field(min_length=1, max_length=128)
    strategy_id: Identifier
    symbol: Symbol
    side: Side
    qty: NonNegative
    price: NonNegative
    commission: NonNegative = 0.0
    ts: AwareDatetime
    status: FillStatus = FillStatus.FILLED
    reason: OrderReason
    reject_reason: str | None = None
    reject_code: RejectCode | None = None  # absent on records written before codes existed

    @model_validator(mode="after")
    def _filled_has_price(self) -> Fill:
        if self.status is FillStatus.FILLED and (self.qty <= 0 or self.price <= 0):
            raise ValueError("a filled order needs qty > 0 and price > 0")
        if self.status is FillStatus.REJECTED and not self.reject_reason:
            raise ValueError("a rejected order needs reject_reason")
        return self


class Position(Message):
    """A strategy's position in one symbol; qty < 0 is short."""

    strategy_id: Identifier
    symbol: Symbol
    qty: FiniteFloat = 0.0
    avg_price: NonNegative = 0.0
    realized_pnl: FiniteFloat = 0.0
    unrealized_pnl: FiniteFloat = 0.0
    commissions: NonNegative = 0.0
    last_price: NonNegative = 0.0
    ts: AwareDatetime
