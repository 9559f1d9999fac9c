"""What the API serves and the dashboard reads: one model per response, shared so both sides agree.

The API (`tradebot.api`) answers with these models and its OpenAPI document is generated from them; the
dashboard (`tradebot.dashboard`) parses every answer into them. They live in core because services never
import each other. Records of the order log, fills and signals are the domain messages themselves
(`OrderRequest`, `Fill`, `Signal`), exactly as the executor and the strategy wrote them.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tradebot.core.costs import Costs
from tradebot.core.models import AwareDatetime, ClosedBar, Fill, FiniteFloat, OrderRequest, Position, Signal
from tradebot.core.params import StrategyParams

Item = TypeVar("Item", bound=BaseModel)


class View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Items(View, Generic[Item]):
    items: list[Item]


class Page(Items[Item], Generic[Item]):
    """One page of a log; pass `next_cursor` as `cursor` for the next one."""

    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class OrderPage(Page[OrderRequest]):
    """Orders as the strategies sent them."""


class FillPage(Page[Fill]):
    """Fills and refusals as the executor recorded them."""


class SignalPage(Page[Signal]):
    """Moving-average crosses as the strategies saw them."""


class BarPage(Page[ClosedBar]):
    """Closed bars of one timeframe, one per symbol and open time."""


class PositionList(Items[Position]):
    """Positions, each marked at its symbol's last price (`last_price`, `unrealized_pnl`)."""


class StrategyPnl(View):
    strategy_id: str
    realized_pnl: FiniteFloat
    unrealized_pnl: FiniteFloat
    commissions: FiniteFloat
    total_pnl: FiniteFloat = Field(description="realized_pnl - commissions + unrealized_pnl")


class PnlList(Items[StrategyPnl]):
    """P&L per strategy, summed over its positions."""


class EquityPoint(View):
    ts: AwareDatetime
    equity: FiniteFloat


class EquityCurve(View):
    strategy_id: str
    points: list[EquityPoint] = Field(description="Equity after each fill, oldest first.")


class PricePoint(View):
    ts: AwareDatetime
    price: FiniteFloat


class LastPrice(View):
    symbol: str
    price: FiniteFloat
    ts: AwareDatetime


class LastPrices(Items[LastPrice]):
    """The last price of every symbol, by symbol."""


class PriceHistory(View):
    symbol: str
    points: list[PricePoint] = Field(description="Recent prices, oldest first.")


class SymbolActivity(View):
    """What a price chart of one symbol shows: its recent prices, and the orders and fills on it."""

    symbol: str
    prices: list[PricePoint] = Field(description="Recent prices, oldest first.")
    orders: list[OrderRequest] = Field(description="Newest first.")
    fills: list[Fill] = Field(description="Newest first.")


class MarketActivity(Items[SymbolActivity]):
    """One `SymbolActivity` per requested symbol, in the order asked."""


class StrategyInfo(View):
    """A registered strategy: what it trades, with which parameters and costs, and whether it is halted."""

    id: str
    symbols: list[str]
    params: StrategyParams
    costs: Costs = Field(default_factory=Costs)
    initial_cash: float = Field(gt=0)
    halted: bool


class StrategyList(Items[StrategyInfo]):
    """Registered strategies, by id."""


class HaltState(View):
    id: str
    halted: bool


class ExitOrder(View):
    symbol: str
    order_id: str = Field(description="The exit order's id (find its fill in /fills).")


class ExitRequested(View):
    """A force-exit or close-all, recorded: the strategy sends the exit orders at the symbols' last prices."""

    strategy_id: str
    symbol: str | None = Field(description="The symbol closed; null for close-all (every symbol).")
    command_id: str = Field(description="Repeat the request with this `command_id` to retry it safely.")
    orders: list[ExitOrder] = Field(description="One exit order per symbol that held a position when asked.")


class Health(View):
    status: str


class Welcome(View):
    message: str
    docs: str
    health: str
