"""Domain models: strict, versioned, JSON round trip, and errors that name the field."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tradebot.core.models import (
    Bar,
    Fill,
    FillStatus,
    OrderReason,
    OrderRequest,
    Position,
    Side,
    Signal,
    Tick,
    order_id,
)

TS = datetime(2024, 1, 2, 15, 4, 5, tzinfo=UTC)


def _error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in error["loc"]) for error in exc.errors()}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", math.nan),
        ("price", math.inf),
        ("price", 0.0),
        ("price", -1.0),
        ("size", -1.0),
        ("symbol", ""),
    ],
)
def test_tick_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    data: dict[str, object] = {"symbol": "AAPL", "price": 100.0, "size": 1.0, "ts": TS}
    data[field] = value
    with pytest.raises(ValidationError) as info:
        Tick.model_validate(data)
    assert field in _error_fields(info.value)


def test_naive_timestamp_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        Tick(symbol="AAPL", price=1.0, ts=datetime(2024, 1, 2))
    assert "ts" in _error_fields(info.value)
    assert "timezone" in str(info.value)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        Tick.model_validate_json('{"symbol": "A", "price": 1, "ts": "2024-01-02T00:00:00Z", "colour": "red"}')
    assert "colour" in _error_fields(info.value)


def test_strict_mode_does_not_coerce_strings_to_numbers() -> None:
    with pytest.raises(ValidationError) as info:
        Tick.model_validate_json('{"symbol": "A", "price": "1.5", "ts": "2024-01-02T00:00:00Z"}')
    assert "price" in _error_fields(info.value)


def test_bar_checks_high_and_low() -> None:
    with pytest.raises(ValidationError, match="high must be"):
        Bar(symbol="A", ts=TS, open=10, high=9, low=8, close=9.5)
    with pytest.raises(ValidationError, match="low must be"):
        Bar(symbol="A", ts=TS, open=10, high=11, low=10.5, close=10.8)


def test_schema_version_is_carried_and_checked() -> None:
    tick = Tick(symbol="A", price=1.0, ts=TS)
    assert '"schema_version":1' in tick.model_dump_json()
    with pytest.raises(ValidationError) as info:
        Tick.model_validate_json(
            '{"schema_version": 2, "symbol": "A", "price": 1, "ts": "2024-01-02T00:00:00Z"}'
        )
    assert "schema_version" in _error_fields(info.value)


@given(
    price=st.floats(min_value=1e-6, max_value=1e9, allow_nan=False),
    qty=st.floats(min_value=1e-6, max_value=1e9, allow_nan=False),
    side=st.sampled_from(list(Side)),
    reason=st.sampled_from(list(OrderReason)),
)
def test_messages_round_trip_through_json(price: float, qty: float, side: Side, reason: OrderReason) -> None:
    order = OrderRequest(
        id=order_id("s1", "AAPL", "tick:1"),
        strategy_id="s1",
        symbol="AAPL",
        side=side,
        qty=qty,
        reason=reason,
        ref_price=price,
        ts=TS,
        cause="tick:1",
    )
    assert OrderRequest.model_validate_json(order.model_dump_json()) == order
    fill = Fill(
        order_id=order.id,
        strategy_id="s1",
        symbol="AAPL",
        side=side,
        qty=qty,
        price=price,
        ts=TS,
        reason=reason,
    )
    assert Fill.model_validate_json(fill.model_dump_json()) == fill
    position = Position(strategy_id="s1", symbol="AAPL", qty=-qty, avg_price=price, ts=TS)
    assert Position.model_validate_json(position.model_dump_json()) == position
    signal = Signal(
        strategy_id="s1", symbol="AAPL", ts=TS, direction="up", short_ma=price, long_ma=price, price=price
    )
    assert Signal.model_validate_json(signal.model_dump_json()) == signal


def test_order_ids_are_deterministic_and_distinct() -> None:
    assert order_id("s1", "AAPL", "tick:7") == order_id("s1", "AAPL", "tick:7")
    ids = {
        order_id("s1", "AAPL", "tick:7"),
        order_id("s2", "AAPL", "tick:7"),
        order_id("s1", "MSFT", "tick:7"),
        order_id("s1", "AAPL", "tick:8"),
        order_id("s1", "AAPL", "tick:7", leg=1),
    }
    assert len(ids) == 5


def test_rejected_fill_needs_a_reason() -> None:
    with pytest.raises(ValidationError, match="reject_reason"):
        Fill(
            order_id="o",
            strategy_id="s1",
            symbol="A",
            side=Side.BUY,
            qty=0,
            price=0,
            ts=TS,
            status=FillStatus.REJECTED,
            reason=OrderReason.ENTRY_LONG,
        )
