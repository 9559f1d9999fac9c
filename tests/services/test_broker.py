"""The paper broker: pre-trade checks, fills under the cost model, positions and P&L, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tradebot.core.costs import Costs
from tradebot.core.models import FillStatus, OrderReason, OrderRequest, Side, order_id
from tradebot.executor.broker import Book, PaperBroker, RiskChecks

NOW = datetime(2024, 1, 2, tzinfo=UTC)


def order(
    side: Side, qty: float, price: float, reason: OrderReason, n: int, strategy: str = "s1"
) -> OrderRequest:
    return OrderRequest(
        id=order_id(strategy, "AAA", f"tick:{n}"),
        strategy_id=strategy,
        symbol="AAA",
        side=side,
        qty=qty,
        reason=reason,
        ref_price=price,
        ts=NOW,
        cause=f"tick:{n}",
    )


def test_fill_uses_the_shared_cost_model_and_tracks_pnl() -> None:
    broker = PaperBroker(Costs(commission_pct=0.1, slippage_bps=10))
    entry = broker.execute(
        order(Side.BUY, 10, 100.0, OrderReason.ENTRY_LONG, 1), now=NOW, halted=False, last_price=None
    )
    assert entry is not None
    assert entry.fill.status is FillStatus.FILLED
    assert entry.fill.price == pytest.approx(100.1)
    assert entry.fill.commission == pytest.approx(10 * 100.1 * 0.001)
    exit_ = broker.execute(
        order(Side.SELL, 10, 110.0, OrderReason.EXIT_CROSS, 2), now=NOW, halted=False, last_price=None
    )
    assert exit_ is not None
    assert exit_.position.qty == 0.0
    assert exit_.position.realized_pnl == pytest.approx(10 * (110 * 0.999 - 100.1))
    assert exit_.position.commissions == pytest.approx(entry.fill.commission + exit_.fill.commission)


def test_same_order_id_is_filled_once() -> None:
    broker = PaperBroker(Costs())
    first = order(Side.BUY, 1, 10.0, OrderReason.ENTRY_LONG, 1)
    assert broker.execute(first, now=NOW, halted=False, last_price=None) is not None
    assert broker.execute(first, now=NOW, halted=False, last_price=None) is None
    assert broker.book("s1", "AAA").qty == 1


@pytest.mark.parametrize(
    ("checks", "halted", "last", "made", "reason"),
    [
        (
            RiskChecks(),
            True,
            None,
            order(Side.BUY, 1, 10.0, OrderReason.ENTRY_LONG, 1),
            ("halted", "strategy halted"),
        ),
        (
            RiskChecks(max_order_qty=5),
            False,
            None,
            order(Side.BUY, 6, 10.0, OrderReason.ENTRY_LONG, 1),
            ("max_qty", "max order qty"),
        ),
        (
            RiskChecks(max_order_notional=50),
            False,
            None,
            order(Side.BUY, 6, 10.0, OrderReason.ENTRY_LONG, 1),
            ("max_notional", "max order notional"),
        ),
        (
            RiskChecks(price_band_pct=5),
            False,
            9.0,
            order(Side.BUY, 1, 10.0, OrderReason.ENTRY_LONG, 1),
            ("price_band", "from the last price"),
        ),
        (
            RiskChecks(),
            False,
            None,
            order(Side.SELL, 1, 10.0, OrderReason.EXIT_CROSS, 1),
            ("no_position", "no position to close"),
        ),
    ],
)
def test_refusals_are_recorded_with_their_reason(
    checks: RiskChecks, halted: bool, last: float | None, made: OrderRequest, reason: tuple[str, str]
) -> None:
    broker = PaperBroker(Costs(), checks)
    result = broker.execute(made, now=NOW, halted=halted, last_price=last)
    assert result is not None
    assert result.fill.status is FillStatus.REJECTED
    code, text = reason
    assert result.fill.reject_code == code
    assert text in (result.fill.reject_reason or "")
    assert broker.book("s1", "AAA").qty == 0.0


def test_halt_refuses_entries_but_not_exits() -> None:
    broker = PaperBroker(Costs())
    broker.execute(
        order(Side.BUY, 2, 10.0, OrderReason.ENTRY_LONG, 1), now=NOW, halted=False, last_price=None
    )
    result = broker.execute(
        order(Side.SELL, 2, 11.0, OrderReason.STOP_LOSS, 2), now=NOW, halted=True, last_price=None
    )
    assert result is not None
    assert result.fill.status is FillStatus.FILLED


def test_rebuild_from_records_gives_the_same_book() -> None:
    live = PaperBroker(Costs(commission_fixed=1))
    records = [
        live.execute(
            order(Side.SELL, 3, 50.0, OrderReason.ENTRY_SHORT, 1), now=NOW, halted=False, last_price=None
        ),
        live.execute(
            order(Side.BUY, 3, 45.0, OrderReason.EXIT_CROSS, 2), now=NOW, halted=False, last_price=None
        ),
        live.execute(
            order(Side.BUY, 2, 46.0, OrderReason.ENTRY_LONG, 3), now=NOW, halted=False, last_price=None
        ),
    ]
    rebuilt = PaperBroker(Costs(commission_fixed=1))
    for record in records:
        assert record is not None
        rebuilt.replay(record)
    assert rebuilt.books == live.books
    assert rebuilt.seen == live.seen


def test_book_flip_through_zero() -> None:
    book = Book()
    book.apply(1, 2, 10.0, 0.0)
    book.apply(-1, 5, 12.0, 0.0)
    assert (book.qty, book.avg_price, book.realized) == (-3, 12.0, 4.0)
